import AsyncHTTPClient
import CoreMetrics
import Crypto
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix

/// Batches events and POSTs them, one batch at a time, in the order they were queued (so a channel's
/// events arrive in order): a batch that fails is sent again, with the same id, after a growing pause,
/// until the endpoint takes it (at least once). Events wait in a bounded queue meanwhile; past its bound
/// new ones are dropped, counted and logged.
final class WebhookSender: Sendable {
    private struct Batch: Sendable {
        let id: String
        let body: String
        let signature: String
        let events: Int
    }

    private struct State {
        var queue = CircularBuffer<String>()
        var inFlight: Batch?
        var timer: Scheduled<Void>?
        var failures = 0
    }

    let configuration: WebhookConfiguration
    private let node: String
    private let loop: any EventLoop
    private let client: HTTPClient
    private let key: SymmetricKey
    // Lock: guards the queue, the batch in flight and its timer, changed from every event loop.
    private let state = NIOLockedValueBox(State())
    private let batches: [String: Counter]
    private let dropped: Counter
    private let log: ThrottledLog

    init(configuration: WebhookConfiguration, node: String, metricsFactory: any MetricsFactory, logger: Logger) {
        self.configuration = configuration
        self.node = node
        self.loop = MultiThreadedEventLoopGroup.singleton.next()
        self.client = HTTPClient(
            eventLoopGroupProvider: .singleton,
            configuration: .init(redirectConfiguration: .disallow, timeout: .init(connect: configuration.timeout)))
        self.key = SymmetricKey(data: Data(configuration.secret.utf8))
        self.batches = Dictionary(
            uniqueKeysWithValues: ["delivered", "failed"].map {
                (
                    $0,
                    Counter(
                        label: "switchboard_webhook_batches_total", dimensions: [("outcome", $0)],
                        factory: metricsFactory)
                )
            })
        self.dropped = Counter(label: "switchboard_webhook_events_dropped_total", factory: metricsFactory)
        self.log = ThrottledLog(interval: .seconds(10), logger: logger)
    }

    /// The pooled connections go with the sender (the client must be shut down before it is freed).
    deinit {
        client.shutdown { _ in }
    }

    /// Queues one event (a JSON object's text); sends a batch once there are `batchSize`, or `maxDelay`
    /// after the first. Callable from any thread.
    func enqueue(_ event: String) {
        enum Next { case nothing, send, drop }
        let next = state.withLockedValue { state -> Next in
            guard state.queue.count < configuration.maxQueuedEvents else { return .drop }
            state.queue.append(event)
            guard state.inFlight == nil else { return .nothing }
            if state.queue.count >= configuration.batchSize { return .send }
            if state.timer == nil {
                state.timer = loop.scheduleTask(in: configuration.maxDelay) { [weak self] in self?.sendNext() }
            }
            return .nothing
        }
        switch next {
        case .nothing: break
        case .send: sendNext()
        case .drop:
            dropped.increment()
            log.warning(
                "webhook queue full: event dropped", key: "dropped",
                metadata: ["queued": "\(configuration.maxQueuedEvents)", "url": "\(configuration.url)"])
        }
    }

    /// Events waiting, the batch in flight included.
    var queued: Int { state.withLockedValue { $0.queue.count + ($0.inFlight?.events ?? 0) } }

    private func sendNext() {
        let batch = state.withLockedValue { state -> Batch? in
            state.timer?.cancel()
            state.timer = nil
            guard state.inFlight == nil, !state.queue.isEmpty else { return nil }
            var events: [String] = []
            while events.count < configuration.batchSize, let event = state.queue.popFirst() { events.append(event) }
            let id = (0..<16).map { _ in String(format: "%02x", UInt8.random(in: 0...255)) }.joined()
            let body =
                "{\"id\":\"\(id)\",\"node\":\(ServerMessage.quote(node)),\"events\":[\(events.joined(separator: ","))]}"
            let code = HMAC<SHA256>.authenticationCode(for: Data(body.utf8), using: key)
            let signature = code.map { String(format: "%02x", $0) }.joined()
            let batch = Batch(id: id, body: body, signature: signature, events: events.count)
            state.inFlight = batch
            return batch
        }
        if let batch { post(batch) }
    }

    private func post(_ batch: Batch) {
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: "application/json")
        headers.add(name: "User-Agent", value: "switchboard")
        headers.add(name: "X-Switchboard-Signature", value: "sha256=\(batch.signature)")
        headers.add(name: "X-Switchboard-Batch", value: batch.id)
        let response: EventLoopFuture<HTTPClient.Response>
        do {
            let request = try HTTPClient.Request(
                url: configuration.url, method: .POST, headers: headers, body: .string(batch.body))
            response =
                client.execute(
                    request: request, delegate: ResponseAccumulator(request: request, maxBodySize: 1 << 16),
                    eventLoop: .indifferent, deadline: .now() + configuration.timeout
                ).futureResult
        } catch {
            response = loop.makeFailedFuture(error)
        }
        response.whenComplete { [weak self] result in
            guard let self else { return }
            switch result {
            case .success(let response) where (200..<300).contains(response.status.code):
                self.delivered()
            case .success(let response):
                self.failed(batch, "HTTP \(response.status.code)")
            case .failure(let error):
                self.failed(batch, "\(error)")
            }
        }
    }

    private func delivered() {
        batches["delivered"]?.increment()
        let sendNow = state.withLockedValue { state -> Bool in
            state.inFlight = nil
            state.failures = 0
            if state.queue.count >= configuration.batchSize { return true }
            if !state.queue.isEmpty, state.timer == nil {
                state.timer = loop.scheduleTask(in: configuration.maxDelay) { [weak self] in self?.sendNext() }
            }
            return false
        }
        if sendNow { sendNext() }
    }

    /// Tries the same batch again after 0.5 s, doubling to at most 30 s, with jitter.
    private func failed(_ batch: Batch, _ why: String) {
        batches["failed"]?.increment()
        let failures = state.withLockedValue { state -> Int in
            state.failures += 1
            return state.failures
        }
        log.warning(
            "webhook batch failed; it will be sent again", key: "failed",
            metadata: ["url": "\(configuration.url)", "error": "\(why)", "failures": "\(failures)"])
        let pause = min(500.0 * pow(2, Double(min(failures - 1, 10))), 30_000) * Double.random(in: 0.5...1)
        loop.scheduleTask(in: .milliseconds(Int64(pause))) { [weak self] in self?.post(batch) }
    }
}
