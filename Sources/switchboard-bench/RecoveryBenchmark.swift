import ArgumentParser
import Foundation
import NIOCore
import NIOPosix
import SwitchboardClient

/// How long a reconnecting client waits to recover what it missed: subscribe, drop, let `--missed`
/// publications go by, reconnect with the last offset and epoch, time the subscribe reply.
struct RecoveryBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "recovery",
        abstract: "Time recovering missed publications on resubscribe (against `switchboard serve`).")

    @Option var host = "127.0.0.1"
    @Option var port = 8080
    @Option var path = "/ws"
    @Option(help: "A channel in a namespace whose history holds at least --missed publications.")
    var channel = "chat:recovery-bench"
    @Option(
        help: """
            Publications each round misses. A default serve keeps 100 in the `chat` namespace's history: for more, \
            run it with --chat-history-size of at least this. Its publish rate limit (20/s, burst 40) only paces \
            the publishing between rounds; --publish-rate and --publish-burst make that quicker.
            """)
    var missed = 50
    @Option var rounds = 10

    func run() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        var options = ClientOptions(path: path)
        options.connectTimeout = .seconds(10)
        let publisher = try await WebSocketClient.connect(host: host, port: port, options: options, group: group)
        var millis: [Double] = []
        var recoveredAll = true
        for round in 0..<rounds {
            let client = try await WebSocketClient.connect(host: host, port: port, options: options, group: group)
            client.send(text: #"{"id":1,"cmd":"subscribe","channel":"\#(channel)"}"#)
            let first = try await reply(client)
            guard let epoch = first["epoch"] as? String, let offset = first["offset"] as? Int else {
                throw ValidationError("unexpected subscribe reply: \(first)")
            }
            await client.disconnect()
            for index in 0..<missed { try await publish(index, with: publisher) }
            let again = try await WebSocketClient.connect(host: host, port: port, options: options, group: group)
            let start = DispatchTime.now().uptimeNanoseconds
            again.send(
                text:
                    #"{"id":1,"cmd":"subscribe","channel":"\#(channel)","recover":{"offset":\#(offset),"epoch":"\#(epoch)"}}"#
            )
            let recovered = try await reply(again)
            let elapsed = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6
            let count = (recovered["publications"] as? [Any])?.count ?? 0
            if recovered["recovered"] as? Bool != true || count != missed { recoveredAll = false }
            millis.append(elapsed)
            print(String(format: "round %d: recovered %d publications in %.2f ms", round + 1, count, elapsed))
            await again.disconnect()
        }
        millis.sort()
        let p50 = millis[millis.count / 2]
        let worst = millis.last ?? 0
        print(
            String(
                format: "\nrecovery of %d missed publications: p50 %.2f ms, max %.2f ms, all recovered: %@", missed,
                p50, worst, recoveredAll ? "yes" : "NO"))
        print(
            #"{"mode":"recovery","missed":\#(missed),"p50_ms":\#(p50),"max_ms":\#(worst),"all_recovered":\#(recoveredAll)}"#
        )
        try await group.shutdownGracefully()
    }

    /// Publishes one missed publication, waiting out the server's publish rate limit (error 106) as often as
    /// it takes: the limit paces the setup, it is not what is measured.
    private func publish(_ index: Int, with publisher: WebSocketClient) async throws {
        while true {
            publisher.send(text: #"{"id":1,"cmd":"publish","channel":"\#(channel)","data":{"n":\#(index)}}"#)
            var text = try await nextText(publisher)
            while !text.hasPrefix(#"{"id":1,"#) { text = try await nextText(publisher) }
            if !text.contains(#""error":"#) { return }
            guard text.contains(#""code":106"#) else {
                throw ValidationError("the server refused a publication to \(channel): \(text)")
            }
            try await Task.sleep(for: .milliseconds(50))
        }
    }

    private func reply(_ client: WebSocketClient) async throws -> [String: Any] {
        while true {
            let text = try await nextText(client)
            guard text.hasPrefix(#"{"id":1,"#),
                let object = try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any]
            else { continue }
            return object["ok"] as? [String: Any] ?? [:]
        }
    }

    /// The next text message; a close or a dropped connection is reported, not waited on forever.
    private func nextText(_ client: WebSocketClient) async throws -> String {
        while true {
            switch try await client.nextMessage(timeout: .seconds(30)) {
            case .text(let text):
                return text
            case .close(let code, let reason):
                throw ValidationError(
                    "the server closed the connection: \(code.map(String.init) ?? "no code") \(reason)")
            case .disconnected:
                throw ValidationError("the server dropped the connection")
            default:
                continue
            }
        }
    }
}
