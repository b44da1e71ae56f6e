import NIOCore

/// What a client sees from the server, in order.
public enum ClientEvent: Sendable, Equatable {
    case text(String)
    case binary(ByteBuffer)
    case ping(ByteBuffer)
    case pong(ByteBuffer)
    /// The server's close frame; `code` is nil when it carried none.
    case close(code: UInt16?, reason: String)
    /// TCP is gone. Always the last event.
    case disconnected
}

/// The server refused the upgrade.
public struct HandshakeFailure: Error, Sendable, CustomStringConvertible {
    /// The HTTP status of the refusal (503, 403…); 0 when no answer came (timeout, connection closed).
    public let status: Int
    /// The response headers, names lowercased (`retry-after`); empty when no answer came.
    public let headers: [String: String]
    /// The response body, or this client's own explanation when no answer came.
    public let body: String
    /// `HTTP status: body`.
    public var description: String { "HTTP \(status): \(body)" }
}

/// No event arrived within the timeout given to `next`, or within `idleTimeout` for `events`.
public struct ClientTimeout: Error, Sendable {}

/// Receives frames for a connection on its event loop: the `WebSocketClient` queues them as events;
/// the load generator counts them without allocating.
public protocol ClientFrameSink: AnyObject {
    func received(_ frame: ServerFrame, on channel: any Channel)
    func disconnected()
}

/// Events waiting to be read by `WebSocketClient.next(timeout:)`.
// @unchecked Sendable: all state is read and written only on `eventLoop`.
final class ClientInbox: ClientFrameSink, @unchecked Sendable {
    let eventLoop: any EventLoop
    private var buffered = CircularBuffer<ClientEvent>()
    private var waiter: (promise: EventLoopPromise<ClientEvent>, timeout: Scheduled<Void>)?
    private var fragments: ByteBuffer?
    private var fragmentOpcode: UInt8 = 0
    private var finished = false

    init(eventLoop: any EventLoop) { self.eventLoop = eventLoop }

    func received(_ frame: ServerFrame, on channel: any Channel) {
        var payload = frame.payload
        switch frame.opcode {
        case 0x0, 0x1, 0x2:
            if frame.opcode != 0 { fragmentOpcode = frame.opcode }
            if !frame.fin || fragments != nil {
                fragments.setOrWrite(payload)
                guard frame.fin, let whole = fragments else { return }
                fragments = nil
                payload = whole
            }
            push(fragmentOpcode == 1 ? .text(String(buffer: payload)) : .binary(payload))
        case 0x8:
            let code = payload.readInteger(as: UInt16.self)
            push(.close(code: code, reason: payload.readString(length: payload.readableBytes) ?? ""))
        case 0x9: push(.ping(payload))
        case 0xA: push(.pong(payload))
        default: break
        }
    }

    func disconnected() {
        guard !finished else { return }
        push(.disconnected)
        finished = true
    }

    private func push(_ event: ClientEvent) {
        guard !finished else { return }
        if let waiter {
            self.waiter = nil
            waiter.timeout.cancel()
            waiter.promise.succeed(event)
        } else {
            buffered.append(event)
        }
    }

    func next(timeout: TimeAmount) -> EventLoopFuture<ClientEvent> {
        eventLoop.flatSubmit {
            if let event = self.buffered.popFirst() { return self.eventLoop.makeSucceededFuture(event) }
            if self.finished { return self.eventLoop.makeSucceededFuture(.disconnected) }
            let promise = self.eventLoop.makePromise(of: ClientEvent.self)
            let timer = self.eventLoop.scheduleTask(in: timeout) {
                self.waiter = nil
                promise.fail(ClientTimeout())
            }
            self.waiter = (promise, timer)
            return promise.futureResult
        }
    }
}

extension Optional where Wrapped == ByteBuffer {
    fileprivate mutating func setOrWrite(_ chunk: ByteBuffer) {
        if var existing = self {
            self = nil
            existing.writeImmutableBuffer(chunk)
            self = existing
        } else {
            self = chunk
        }
    }
}
