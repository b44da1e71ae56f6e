import HTTPTypes
import Logging
import NIOCore
import NIOHTTPTypes

/// Keeps one API connection from being tied up: headers must arrive within `headerTimeout` (from the
/// connection's start or the previous response), a body within `bodyTimeout` after its headers, or the
/// connection is closed; a body declared larger than the limit is refused with 413 before a byte of it is
/// read; `Expect: 100-continue` is answered (100, or that 413). Without this, connections that send
/// nothing, stop mid-headers or declare a body and send none would each hold a descriptor for ever.
final class APIConnectionGuard: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    struct Limits: Sendable {
        var headerTimeout: TimeAmount
        var bodyTimeout: TimeAmount
        var maxBodySize: Int
    }

    private enum State: Equatable {
        case awaitingHead
        /// A request in progress: its body may still arrive after its response went out (a 401 is sent
        /// before the body is read), so the next request is awaited once both have ended.
        case inRequest(requestEnded: Bool, responseEnded: Bool)
        /// Refused early: the rest of the request is dropped and the connection closes after the answer.
        case refused
    }

    private var state = State.awaitingHead
    private var timer: Scheduled<Void>?
    private let limits: Limits
    private let logger: Logger

    init(limits: Limits, logger: Logger) {
        self.limits = limits
        self.logger = logger
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { arm(limits.headerTimeout, context: context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        arm(limits.headerTimeout, context: context)
        context.fireChannelActive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let request):
            guard case .awaitingHead = state else { return context.fireChannelRead(data) }
            if let declared = request.headerFields[.contentLength].flatMap(Int.init), declared > limits.maxBodySize {
                return refuse(context: context)
            }
            if request.headerFields[.expect]?.lowercased() == "100-continue" {
                context.writeAndFlush(wrapOutboundOut(.head(HTTPResponse(status: .continue))), promise: nil)
            }
            state = .inRequest(requestEnded: false, responseEnded: false)
            arm(limits.bodyTimeout, context: context)
            context.fireChannelRead(data)
        case .body:
            guard case .refused = state else { return context.fireChannelRead(data) }
        case .end:
            switch state {
            case .refused: return
            case .inRequest(_, let responseEnded):
                timer?.cancel()
                timer = nil
                state = .inRequest(requestEnded: true, responseEnded: responseEnded)
                awaitNextIfDone(context: context)
            default: break
            }
            context.fireChannelRead(data)
        }
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .end = unwrapOutboundIn(data), case .inRequest(let requestEnded, _) = state {
            state = .inRequest(requestEnded: requestEnded, responseEnded: true)
            awaitNextIfDone(context: context)
        }
        context.write(data, promise: promise)
    }

    /// Once the request and its response have both ended, whichever came last, the next request's
    /// headers are awaited under the header deadline.
    private func awaitNextIfDone(context: ChannelHandlerContext) {
        guard case .inRequest(true, true) = state else { return }
        state = .awaitingHead
        arm(limits.headerTimeout, context: context)
    }

    private func arm(_ timeout: TimeAmount, context: ChannelHandlerContext) {
        timer?.cancel()
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        timer = context.eventLoop.scheduleTask(in: timeout) {
            let (handler, context) = loopBound.value
            handler.logger.debug(
                "API connection closed: request not received in time",
                metadata: ["waiting for": "\(handler.state == .awaitingHead ? "headers" : "body")"])
            context.close(promise: nil)
        }
    }

    /// 413 at once, and the connection closed after it: the declared body is never read.
    private func refuse(context: ChannelHandlerContext) {
        state = .refused
        timer?.cancel()
        timer = nil
        let body = ByteBuffer(string: #"{"error":{"code":117,"message":"request too large"}}"#)
        var head = HTTPResponse(status: .contentTooLarge)
        head.headerFields[.contentType] = "application/json"
        head.headerFields[.contentLength] = "\(body.readableBytes)"
        head.headerFields[.connection] = "close"
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        context.write(wrapOutboundOut(.body(body)), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil))).assumeIsolated().whenComplete { _ in
            context.close(promise: nil)
        }
    }
}
