import AsyncHTTPClient
import CoreMetrics
import Logging
import NIOCore
import NIOHTTP1

/// Asks the application's backend over HTTP (async-http-client, one pooled client): a POST of the event
/// as JSON, answered with exactly one of `result`, `error` or `disconnect`. Bounded by the configured
/// timeout twice over: the HTTP client's deadline, and a timer on the caller's loop (a seam's future may
/// complete late or never). Every call is counted by event and outcome; failures are logged at most once
/// per ten seconds per event and outcome.
final class EventProxy: Sendable {
    /// What is asked.
    enum Event: String, CaseIterable, Sendable {
        case connect, refresh, subscribe, publish, rpc
    }

    /// How a call ended, as `/metrics` counts it.
    enum Outcome: String, CaseIterable, Sendable {
        /// `result`, `error` or `disconnect`: the backend decided.
        case result, error, disconnect
        /// No answer in time.
        case timeout
        /// Not reachable, or a 5xx status.
        case unavailable
        /// An answer the server cannot use.
        case invalid
    }

    let configuration: ProxyConfiguration
    private let client: HTTPClient
    private let requests: [Event: [Outcome: Counter]]
    private let durations: [Event: Timer]
    private let log: ThrottledLog

    /// The largest answer read; past it the answer is invalid.
    static let maxAnswerBytes = 1 << 20

    init(configuration: ProxyConfiguration, metricsFactory: any MetricsFactory, logger: Logger) {
        self.configuration = configuration
        // No redirects: a redirect could carry the forwarded cookies to another host. A backend that
        // refuses connections is answered at once (110), not retried until the timeout: the client retries.
        var pool = HTTPClient.Configuration.ConnectionPool(
            idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: 64)
        pool.retryConnectionEstablishment = false
        self.client = HTTPClient(
            eventLoopGroupProvider: .singleton,
            configuration: .init(
                redirectConfiguration: .disallow, timeout: .init(connect: configuration.timeout),
                connectionPool: pool))
        self.requests = Dictionary(
            uniqueKeysWithValues: Event.allCases.map { event in
                (
                    event,
                    Dictionary(
                        uniqueKeysWithValues: Outcome.allCases.map { outcome in
                            (
                                outcome,
                                Counter(
                                    label: "switchboard_proxy_requests_total",
                                    dimensions: [("event", event.rawValue), ("outcome", outcome.rawValue)],
                                    factory: metricsFactory)
                            )
                        })
                )
            })
        self.durations = Dictionary(
            uniqueKeysWithValues: Event.allCases.map {
                (
                    $0,
                    Timer(
                        label: "switchboard_proxy_request_duration_seconds", dimensions: [("event", $0.rawValue)],
                        factory: metricsFactory)
                )
            })
        self.log = ThrottledLog(interval: .seconds(10), logger: logger)
    }

    func url(for event: Event) -> String? {
        switch event {
        case .connect: configuration.connectURL
        case .refresh: configuration.refreshURL
        case .subscribe: configuration.subscribeURL
        case .publish: configuration.publishURL
        case .rpc: configuration.rpcURL
        }
    }

    /// The headers of `request` that the configuration forwards.
    func forwarded(from headers: HTTPHeaders) -> HTTPHeaders {
        var forwarded = HTTPHeaders()
        for name in configuration.forwardedHeaders {
            for value in headers[name] { forwarded.add(name: name, value: value) }
        }
        return forwarded
    }

    /// POSTs `body` (a JSON object) for `event`; completes on `eventLoop` with the backend's answer, or
    /// fails with a `ProxyFailure`, always within the timeout.
    /// `check` looks at a `result` before it counts as one: a result the server cannot use (a `user` that
    /// is not a string, say) fails as invalid.
    func call(
        _ event: Event, body: String, headers: HTTPHeaders, on eventLoop: any EventLoop,
        check: @escaping @Sendable (JSONObject) throws -> Void = { _ in }
    ) -> EventLoopFuture<ProxyAnswer> {
        guard let url = url(for: event) else {
            return eventLoop.makeFailedFuture(ProxyFailure(.unavailable, "no \(event.rawValue) proxy is configured"))
        }
        let started = NIODeadline.now()
        let answer: EventLoopFuture<ProxyAnswer>
        do {
            var requestHeaders = headers
            requestHeaders.replaceOrAdd(name: "Content-Type", value: "application/json")
            requestHeaders.replaceOrAdd(name: "User-Agent", value: "switchboard")
            let request = try HTTPClient.Request(url: url, method: .POST, headers: requestHeaders, body: .string(body))
            let accumulator = ResponseAccumulator(request: request, maxBodySize: Self.maxAnswerBytes)
            answer = client.execute(
                request: request, delegate: accumulator, eventLoop: .indifferent,
                deadline: started + configuration.timeout
            ).futureResult
                .flatMapErrorThrowing { error in throw ProxyFailure(error) }
                .flatMapThrowing { response in
                    let answer = try ProxyAnswer(response: response)
                    if case .result(let result) = answer {
                        do {
                            try check(result)
                        } catch {
                            throw ProxyFailure(.invalid, "\(error)")
                        }
                    }
                    return answer
                }
        } catch {
            answer = eventLoop.makeFailedFuture(ProxyFailure(.invalid, "bad URL \(url): \(error)"))
        }
        // The HTTP client's deadline should end it; this timer makes sure, on the caller's loop.
        let bounded = answer.hop(to: eventLoop).bounded(by: configuration.timeout + .milliseconds(500))
            .flatMapErrorThrowing { error in
                throw error as? ProxyFailure ?? ProxyFailure(.timeout, "no answer within the timeout")
            }
        bounded.whenComplete { [self] result in
            durations[event]?.recordNanoseconds((NIODeadline.now() - started).nanoseconds)
            let outcome: Outcome
            switch result {
            case .success(.result): outcome = .result
            case .success(.error): outcome = .error
            case .success(.disconnect): outcome = .disconnect
            case .failure(let error):
                let failure = error as? ProxyFailure ?? ProxyFailure(.unavailable, "\(error)")
                outcome = failure.outcome
                log.warning(
                    "the application's backend failed", key: "\(event.rawValue) \(outcome.rawValue)",
                    metadata: [
                        "event": "\(event.rawValue)", "outcome": "\(outcome.rawValue)", "detail": "\(failure.detail)",
                    ])
            }
            requests[event]?[outcome]?.increment()
        }
        return bounded
    }

    /// Closes the pooled connections once the last user of the proxy is gone (the client must be shut down
    /// before it is freed; its shutdown keeps it alive until done).
    deinit {
        client.shutdown { _ in }
    }
}

/// The backend's decision.
enum ProxyAnswer: Sendable {
    /// Go ahead, with what the backend said (`user`, `data`, `info`, …), each field as its exact JSON text.
    case result(JSONObject)
    /// Refused: the client gets this error (codes from 1000 up are the application's).
    case error(ProtocolError)
    /// Close the connection with this code (4000–4999) and reason.
    case disconnect(code: UInt16, reason: String)

    /// Reads a 2xx answer; a 5xx status is the backend being unavailable, any other status an invalid answer.
    init(response: HTTPClient.Response) throws {
        let status = response.status.code
        guard (200..<300).contains(status) else {
            throw ProxyFailure(status >= 500 ? .unavailable : .invalid, "HTTP \(status)")
        }
        guard let body = response.body, let object = try? JSONObject(parsing: body.readableBytesView) else {
            throw ProxyFailure(.invalid, "the answer is not a JSON object")
        }
        try self.init(object)
    }

    init(_ object: JSONObject) throws {
        let present = ["result", "error", "disconnect"].filter(object.has)
        guard present.count == 1 else {
            throw ProxyFailure(.invalid, "the answer must have exactly one of result, error and disconnect")
        }
        do {
            if let result = try object.object("result") {
                self = .result(result)
            } else if let error = try object.object("error") {
                guard let code = try error.integer("code"), code >= 1000 else {
                    throw ProxyFailure(.invalid, "error.code must be a whole number from 1000 up")
                }
                self = .error(ProtocolError(code, try error.string("message") ?? ""))
            } else {
                guard let disconnect = try object.object("disconnect"), let code = try disconnect.integer("code"),
                    (4000...4999).contains(code)
                else { throw ProxyFailure(.invalid, "disconnect.code must be within 4000–4999") }
                let reason = try disconnect.string("reason") ?? ""
                guard reason.utf8.count <= 123 else {
                    throw ProxyFailure(.invalid, "disconnect.reason must be at most 123 bytes")
                }
                self = .disconnect(code: UInt16(code), reason: reason)
            }
        } catch let failure as ProxyFailure {
            throw failure
        } catch {
            throw ProxyFailure(.invalid, "\(error)")
        }
    }
}

/// Why the backend gave no decision.
struct ProxyFailure: Error, CustomStringConvertible {
    let outcome: EventProxy.Outcome
    let detail: String

    init(_ outcome: EventProxy.Outcome, _ detail: String) {
        self.outcome = outcome
        self.detail = detail
    }

    /// From the HTTP client's error: its deadline is a timeout, anything else (refused, reset) unavailable.
    init(_ error: any Error) {
        if let failure = error as? ProxyFailure {
            self = failure
        } else if let error = error as? HTTPClientError, error == .deadlineExceeded || error == .readTimeout {
            self.init(.timeout, "no answer within the timeout")
        } else if error is ResponseAccumulator.ResponseTooBigError {
            self.init(.invalid, "the answer is over \(EventProxy.maxAnswerBytes) bytes")
        } else {
            self.init(.unavailable, "\(error)")
        }
    }

    var description: String { "\(outcome.rawValue): \(detail)" }

    /// What the client is told: 110 (retry later) when the backend is down or slow, 118 when it answered
    /// badly.
    var protocolError: ProtocolError {
        switch outcome {
        case .invalid: .badBackendAnswer
        case .timeout: ProtocolError(110, "temporarily unavailable: the application's backend did not answer in time")
        default: ProtocolError(110, "temporarily unavailable: the application's backend is unavailable")
        }
    }
}
