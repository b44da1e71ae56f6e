import ArgumentParser
import Foundation

@main
struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "switchboard-bench",
        abstract:
            "Load generator for Switchboard (against `switchboard echo [--broadcast]`, or `serve` with --channel).",
        discussion: """
            Modes: idle (hold N connections), fanout (N receivers, K senders broadcasting through the server),
            echo (closed loop: every connection sends and waits for its own message back), churn (connect and
            disconnect continuously). Clients are spread over --workers processes and --source-addresses
            loopback addresses (127.0.0.2, .3, ...) to stay under the per-process file limit and the
            ephemeral port range. Given --server-pid, reports server RSS per connection and CPU per delivery.
            """,
        subcommands: [Run.self, RecoveryBenchmark.self, WorkerCommand.self], defaultSubcommand: Run.self)
}

struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "run", abstract: "Run a benchmark (default).")

    @Argument(help: "idle | fanout | echo | churn") var mode: WorkerPlan.Mode
    @Option var host = "127.0.0.1"
    @Option(help: "Server port; repeat it to spread connections over several nodes (connection i uses port i mod n).")
    var port: [Int] = [8080]
    @Option(help: "WebSocket path (`serve`'s default; `echo` takes any).") var path = "/ws"
    @Option(help: "Connections in total (fanout: receivers plus senders; churn: connections in flight).")
    var connections = 1000
    @Option(help: "Sending connections (fanout).") var senders = 1
    @Option(
        help: """
            Broadcasts per second over all senders (fanout, echo); 0 = as fast as the window allows. Default 0, and \
            with --channel 10 per sender: `serve` holds each connection to its publishRate (20/s, burst 40) and \
            refuses the rest, so run it with a higher --publish-rate before asking for more.
            """)
    var rate: Double?
    @Option(help: "Messages each sender may have in flight at maximum rate.") var window = 16
    @Option(help: "Payload bytes per message (at least 16).") var messageSize = 64
    @Option(help: "Seconds to measure after connecting.") var duration: Double = 10
    @Option(help: "Seconds to wait after connecting before measuring.") var settle: Double = 1
    @Option(help: "Worker processes.") var workers = 2
    @Option(help: "Loopback source addresses to spread connections over.") var sourceAddresses = 8
    @Option(help: "Connections opened at once per worker.") var connectConcurrency = 256
    @Option(
        help: "Speak client protocol v1 (against `switchboard serve`): subscribe to this channel and publish to it.")
    var channel: String?
    @Option(
        help:
            "With --channel: spread connections over this many channels (name + number); senders publish to their own.")
    var channels = 1
    @Option(
        help: """
            With --channel: raw pub/sub over WebSocket instead of protocol v1 (an nchan `nchan_pubsub` location): \
            open this path + the channel name, publish by sending, and count every text message received.
            """)
    var channelPath: String?
    @Option(help: "An upgrade header for every connection, NAME:VALUE (e.g. Authorization: Bearer TOKEN); repeatable.")
    var header: [String] = []
    @Option(help: "Connect with TLS (wss://), trusting this CA certificate (PEM) for `localhost`.")
    var tlsCA: String?
    @Option(
        help:
            "PID of the server, to report its RSS per connection and CPU per delivery; repeat it for several nodes (summed)."
    )
    var serverPid: [Int32] = []
    @Option(help: "PID of redis-server, to report its CPU per publication (a cluster).")
    var redisPid: Int32?

    private func ratePerSender(_ senders: Int) -> Double {
        guard let rate else { return channel == nil ? 0 : 10 }
        return rate / Double(max(senders, 1))
    }

    func run() throws {
        // A worker that has already exited must not take the coordinator down when told "drain".
        signal(SIGPIPE, SIG_IGN)
        let workers = max(1, min(self.workers, connections))
        var plans: [WorkerPlan] = []
        var first = 0
        for index in 0..<workers {
            let share = connections / workers + (index < connections % workers ? 1 : 0)
            let totalSenders = mode == .echo ? connections : (mode == .fanout ? max(senders, 1) : 0)
            plans.append(
                WorkerPlan(
                    mode: mode, host: host, ports: port, path: path, connections: share, firstIndex: first,
                    sourceAddresses: sourceAddresses, totalSenders: totalSenders,
                    ratePerSender: ratePerSender(totalSenders), window: window, messageSize: messageSize,
                    connectConcurrency: connectConcurrency, channel: channel, channels: max(channels, 1),
                    channelPath: channelPath,
                    headers: try header.map { line in
                        guard let colon = line.firstIndex(of: ":") else {
                            throw ValidationError("--header must be NAME:VALUE")
                        }
                        return [
                            String(line[..<colon]),
                            line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces),
                        ]
                    }, tlsAuthority: tlsCA))
            first += share
        }
        try Coordinator(
            plans: plans, serverPIDs: serverPid, redisPID: redisPid, duration: duration, settle: settle,
            receiversPerPublication: channel == nil ? connections : connections / max(channels, 1)
        ).run()
    }
}

struct WorkerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "worker", abstract: "Internal: one load-generating process.", shouldDisplay: false)
    @Argument var plan: String

    func run() throws {
        let plan = try JSONDecoder().decode(WorkerPlan.self, from: Data(self.plan.utf8))
        let worker = try Worker(plan: plan)
        let done = DispatchSemaphore(value: 0)
        Task {
            do { try await worker.run() } catch { FileHandle.standardError.write(Data("worker: \(error)\n".utf8)) }
            done.signal()
        }
        done.wait()
        Foundation.exit(0)
    }
}

extension WorkerPlan.Mode: ExpressibleByArgument {}
