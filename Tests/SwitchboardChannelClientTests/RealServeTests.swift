import Foundation
import NIOConcurrencyHelpers
import SwitchboardChannelClient
import SwitchboardTestSupport
import Testing

/// The client against the real `switchboard serve` binary (built beside the tests), as an application
/// would meet it: tokens, a link that goes silent, recovery of every missed publication exactly once.
@Suite("ChannelClient against switchboard serve", .timeLimit(.minutes(3)))
struct RealServeTests {
    @Test func recoversEveryPublicationMissedOnASilentLinkToTheRealServer() async throws {
        let serve = try ServeProcess.start(
            "--host", "127.0.0.1", "--port", "0", "--no-api", "true", "--ping-interval", "1",
            "--token-secret", TestTokens.secret)
        defer { serve.stop() }
        let port = try await serve.port()
        let proxy = try await FaultProxy.start(to: port)
        let subscriber = makeClient(port: proxy.port) { $0.getToken = { TestTokens.make(user: "ada", expiresIn: 600) } }
        let publisher = makeClient(port: port) { $0.token = TestTokens.make(user: "bob", expiresIn: 600) }
        try await finally({
            await subscriber.close()
            await publisher.close()
            await proxy.stop()
        }) {
            let subscription = try subscriber.subscribe("chat:real")
            let events = Recorder(subscription.events)
            subscriber.connect()
            publisher.connect()
            try await events.wait("subscribed") { $0.subscriptions == [nil] }
            for index in 1...10 { try await publisher.publish(channel: "chat:real", data: "\(index)") }
            try await events.wait("the first 10") { $0.offsets.count == 10 }
            // The subscriber's link goes silent (no reset): only its watchdog can tell.
            proxy.blackholeOpenLinks()
            for index in 11...30 { try await publisher.publish(channel: "chat:real", data: "\(index)") }
            try await events.wait("all 30 after the reconnect", timeout: .seconds(60)) { $0.offsets.count >= 30 }
            try await subscriber.ping()
            #expect(events.items.offsets == Array(1...30))
            #expect(events.items.publications.map(\.data) == (1...30).map { "\($0)" })
            #expect(events.items.subscriptions == [nil, true])
        }
    }
}

/// `switchboard serve` from the build directory, its output collected for the ready line.
final class ServeProcess: Sendable {
    private let process: Process
    // Lock: the output read so far, appended by the pipe's handler.
    private let output = NIOLockedValueBox("")

    private init(process: Process) { self.process = process }

    static func start(_ arguments: String...) throws -> ServeProcess {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        let binary = root.appendingPathComponent(".build/debug/switchboard")
        guard FileManager.default.isExecutableFile(atPath: binary.path) else {
            throw ServeMissing(path: binary.path)
        }
        let process = Process()
        process.executableURL = binary
        process.arguments = ["serve"] + arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        let serve = ServeProcess(process: process)
        pipe.fileHandleForReading.readabilityHandler = { [output = serve.output] handle in
            let text = String(decoding: handle.availableData, as: UTF8.self)
            output.withLockedValue { $0 += text }
        }
        try process.run()
        return serve
    }

    /// The port from the ready line ("switchboard listening on ws://host:port/…").
    func port() async throws -> Int {
        var port: Int?
        try await eventually(timeout: .seconds(60), "serve's ready line") {
            let text = self.output.withLockedValue { $0 }
            guard let range = text.range(of: "listening on ws://127.0.0.1:") else { return false }
            port = Int(text[range.upperBound...].prefix { $0.isNumber })
            return port != nil
        }
        return port ?? 0
    }

    func stop() {
        guard process.isRunning else { return }
        process.terminate()
        process.waitUntilExit()
    }
}

struct ServeMissing: Error, CustomStringConvertible {
    let path: String
    var description: String { "no switchboard binary at \(path): run swift build first" }
}
