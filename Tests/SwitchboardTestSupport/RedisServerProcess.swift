import Foundation
import NIOCore
import NIOPosix
import SwitchboardRedis

/// A real `redis-server` (Debian's) on a free loopback port, for the life of a test.
public final class RedisServerProcess: Sendable {
    /// The loopback port this redis-server (or sentinel) listens on.
    public let port: Int
    private let process: Process

    private init(port: Int, process: Process) {
        self.port = port
        self.process = process
    }

    /// Starts one on `port`, or on a free one.
    public static func start(_ extraArguments: [String] = [], port: Int? = nil) async throws -> RedisServerProcess {
        let password = extraArguments.firstIndex(of: "--requirepass").map { extraArguments[$0 + 1] }
        // A TLS port cannot be asked INFO in plain text: accepting, with this child still running, has to do.
        let plain = !extraArguments.contains("--tls-port")
        return try await launch(port: port, password: password, plain: plain) { chosen in
            [
                "--port", "\(chosen)", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--loglevel",
                "warning",
            ] + extraArguments
        }
    }

    /// `redis-server --sentinel` on a free port, watching the primary at `primaryPort` under `name`, quick to
    /// call it down (`downAfter`) and to fail over.
    public static func startSentinel(
        monitoring primaryPort: Int, name: String = "primary", downAfter: TimeAmount = .milliseconds(500)
    ) async throws -> RedisServerProcess {
        try await launch(port: nil, password: nil, plain: true) { port in
            let directory = FileManager.default.temporaryDirectory.appendingPathComponent(
                "sentinel-\(UUID().uuidString)")
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            let file = directory.appendingPathComponent("sentinel.conf")
            let milliseconds = downAfter.nanoseconds / 1_000_000
            try """
            port \(port)
            bind 127.0.0.1
            dir \(directory.path)
            sentinel monitor \(name) 127.0.0.1 \(primaryPort) 1
            sentinel down-after-milliseconds \(name) \(milliseconds)
            sentinel failover-timeout \(name) 3000
            sentinel parallel-syncs \(name) 1

            """.write(to: file, atomically: true, encoding: .utf8)
            return [file.path, "--sentinel", "--loglevel", "warning"]
        }
    }

    /// Runs redis-server with `arguments(port)` until one answers on its port as itself (INFO's process_id is
    /// this child's). A free port can be taken by another process before redis-server binds it: then this one
    /// exits and another free port is tried, and a stranger on the port is never mistaken for it.
    private static func launch(
        port: Int?, password: String?, plain: Bool, arguments: (Int) throws -> [String]
    ) async throws -> RedisServerProcess {
        for _ in 0..<5 {
            let chosen = try port ?? freePort()
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/redis-server")
            process.arguments = try arguments(chosen)
            // Neither output shared with the test process: a redis-server left behind must not hold the test
            // runner's pipe open (swift test waits for it to close).
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            try process.run()
            let server = RedisServerProcess(port: chosen, process: process)
            do {
                try await eventually(timeout: .seconds(20), "redis-server on \(chosen) answering as itself") {
                    guard process.isRunning else { return true }
                    return plain ? await server.answersAsItself(password: password) : await server.answersPing()
                }
            } catch {
                server.stop()  // never leave a redis-server behind a test that failed to start it
                throw error
            }
            if process.isRunning { return server }
        }
        throw ConditionTimeout(description: "redis-server could not bind a port in 5 tries")
    }

    /// A client configuration for this server: plain TCP to 127.0.0.1:`port`, no credentials.
    public var configuration: RedisConfiguration { RedisConfiguration(host: "127.0.0.1", port: port) }

    /// Answering on its port, as this process: INFO's process_id is the child's pid.
    private func answersAsItself(password: String?) async -> Bool {
        guard let connection = try? await RawConnection.connect(port: port) else { return false }
        if let password { connection.send("AUTH \(password)\r\n") }
        connection.send("INFO server\r\n")
        try? await eventually(timeout: .seconds(2), "INFO") {
            connection.receivedText.contains("process_id:") || !connection.isActive
        }
        await connection.close()
        return connection.receivedText.contains("process_id:\(process.processIdentifier)\r\n")
    }

    /// Accepting TCP connections (a TLS port, which cannot be asked INFO in plain text).
    private func answersPing() async -> Bool {
        guard
            let channel = try? await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .connect(host: "127.0.0.1", port: port).get()
        else { return false }
        try? await channel.close()
        return true
    }

    /// Sends `signal` to the process (SIGSTOP to freeze it, SIGCONT to resume); does not wait.
    public func signal(_ signal: Int32) { kill(process.processIdentifier, signal) }

    /// SIGKILL: a child of the test process may inherit a mask that blocks SIGTERM, and nothing of a test
    /// server's state matters. Foundation reaps it; `waitUntilExit` would spin a core while it does.
    public func stop() {
        kill(process.processIdentifier, SIGKILL)
    }

    /// SIGKILL, then waits until the process is gone, so another server may take its port.
    public func stopAndWait() async throws {
        stop()
        try await eventually(timeout: .seconds(10), "redis-server gone") { !process.isRunning }
    }

    /// A loopback port that was free a moment ago (bound to port 0, then closed): another process may
    /// take it before the caller binds it.
    public static func freePort() throws -> Int {
        let channel = try ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .bind(host: "127.0.0.1", port: 0).wait()
        defer { try? channel.close().wait() }
        return channel.localAddress?.port ?? 0
    }
}
