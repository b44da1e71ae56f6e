import Foundation
import Hummingbird
import Logging
import NIOConcurrencyHelpers
import NIOCore
import SwitchboardServer

/// A real HTTP backend for the event proxy (Hummingbird on a free loopback port): every POST to
/// `/<event>` is recorded with its body and headers and answered by the test's `answer`.
final class ProxyBackend: Sendable {
    /// One request the server made.
    struct Request: Sendable {
        let event: String
        let body: String
        let headers: [String: String]
        /// The body as JSON.
        var json: [String: Any] {
            (try? JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any]) ?? [:]
        }
    }

    /// The backend's answer: an HTTP status and a body; `delay` first.
    struct Answer: Sendable {
        var status: HTTPResponse.Status = .ok
        var body: String
        var delay: Duration = .zero
    }

    typealias Handler = @Sendable (Request) -> Answer

    // Lock: guards what was received, read by tests while the server records.
    private let received = NIOLockedValueBox<[Request]>([])
    private let task: Task<Void, any Error>
    let port: Int

    private init(task: Task<Void, any Error>, port: Int) {
        self.task = task
        self.port = port
    }

    func url(_ event: String) -> String { "http://127.0.0.1:\(port)/\(event)" }

    /// Subscribe, publish and rpc proxied here (connect and refresh when asked), with `timeout`.
    func configuration(
        timeout: TimeAmount = .seconds(5), forwarding headers: [String] = [], connect: Bool = false,
        refresh: Bool = false
    ) -> ProxyConfiguration {
        ProxyConfiguration(
            connectURL: connect ? url("connect") : nil, refreshURL: refresh ? url("refresh") : nil,
            subscribeURL: url("subscribe"), publishURL: url("publish"), rpcURL: url("rpc"), timeout: timeout,
            forwardedHeaders: headers)
    }

    static func start(_ answer: @escaping Handler) async throws -> ProxyBackend {
        let (ports, continuation) = AsyncStream<Int>.makeStream()
        let box = NIOLockedValueBox<ProxyBackend?>(nil)
        let router = Router()
        router.post(":event") { request, context -> Response in
            let event = context.parameters.get("event") ?? ""
            var request = request
            let body = try await request.collectBody(upTo: 1 << 20)
            var headers: [String: String] = [:]
            for field in request.headers { headers[field.name.canonicalName.lowercased()] = field.value }
            let recorded = Request(event: event, body: String(buffer: body), headers: headers)
            box.withLockedValue { $0 }?.received.withLockedValue { $0.append(recorded) }
            let reply = answer(recorded)
            if reply.delay > .zero { try await Task.sleep(for: reply.delay) }
            return Response(
                status: reply.status, headers: [.contentType: "application/json"],
                body: .init(byteBuffer: ByteBuffer(string: reply.body)))
        }
        let app = Application(
            router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)),
            onServerRunning: { channel in continuation.yield(channel.localAddress?.port ?? 0) },
            logger: Logger(label: "proxy-backend", factory: { _ in SwiftLogNoOpLogHandler() }))
        let task = Task { try await app.runService() }
        var iterator = ports.makeAsyncIterator()
        let backend = ProxyBackend(task: task, port: await iterator.next() ?? 0)
        box.withLockedValue { $0 = backend }
        return backend
    }

    /// Requests received for `event`, in order.
    func requests(_ event: String) -> [Request] { received.withLockedValue { $0.filter { $0.event == event } } }

    func stop() async {
        task.cancel()
        _ = await task.result
    }
}
