import NIOCore
import SwitchboardCore

/// Sends the upgrade request, checks the 101 response, then splits server frames for a sink and
/// answers pings (unless told not to, to play a dead client).
final class ClientConnectionHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// Notes a close frame the client sends itself, so the server's answer is not echoed again.
    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let bytes = unwrapOutboundIn(data)
        if case .open = state, bytes.getInteger(at: bytes.readerIndex, as: UInt8.self).map({ $0 & 0x0F == 0x8 }) == true
        {
            closeAnswered = true
        }
        context.write(data, promise: promise)
    }

    private enum State {
        case handshaking(ByteBuffer?)
        /// A refused upgrade: collecting the response body.
        case refused(ClientHandshake.Response, ByteBuffer)
        case open
    }

    private let handshake: ClientHandshake
    private let upgraded: EventLoopPromise<String?>
    private let sink: any ClientFrameSink
    private let autoPong: Bool
    private var state = State.handshaking(nil)
    private var pending: ByteBuffer?
    private var parser = ServerFrameParser()
    private var closeAnswered = false

    init(handshake: ClientHandshake, upgraded: EventLoopPromise<String?>, sink: any ClientFrameSink, autoPong: Bool) {
        self.handshake = handshake
        self.upgraded = upgraded
        self.sink = sink
        self.autoPong = autoPong
    }

    func channelActive(context: ChannelHandlerContext) {
        var request = context.channel.allocator.buffer(capacity: handshake.request.utf8.count)
        request.writeString(handshake.request)
        context.writeAndFlush(wrapOutboundOut(request), promise: nil)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var input = unwrapInboundIn(data)
        switch state {
        case .handshaking(var buffered):
            buffered.setOrAppend(&input)
            guard let bytes = buffered, let response = ClientHandshake.parseHead(bytes) else {
                state = .handshaking(buffered)
                return
            }
            var rest = bytes
            rest.moveReaderIndex(forwardBy: response.headerLength)
            guard response.status == 101, response.headers["sec-websocket-accept"] == handshake.expectedAccept else {
                state = .refused(response, rest)
                finishRefusalIfComplete(context: context)
                return
            }
            state = .open
            upgraded.succeed(response.headers["sec-websocket-protocol"])
            readFrames(&rest, context: context)
        case .refused(let response, var body):
            body.writeBuffer(&input)
            state = .refused(response, body)
            finishRefusalIfComplete(context: context)
        case .open:
            readFrames(&input, context: context)
        }
    }

    private func finishRefusalIfComplete(context: ChannelHandlerContext) {
        guard case .refused(let response, let body) = state else { return }
        let length = Int(response.headers["content-length"] ?? "") ?? Int.max
        guard body.readableBytes >= length else { return }
        upgraded.fail(HandshakeFailure(status: response.status, headers: response.headers, body: String(buffer: body)))
        context.close(promise: nil)
    }

    private func readFrames(_ input: inout ByteBuffer, context: ChannelHandlerContext) {
        if var buffered = pending {
            pending = nil
            buffered.writeBuffer(&input)
            input = buffered
        }
        while let frame = parser.next(from: &input) {
            if frame.opcode == Opcode.close.rawValue, autoPong, !closeAnswered {
                // Complete the close handshake as a well-behaved client does: echo the code.
                closeAnswered = true
                let code = frame.payload.getInteger(at: frame.payload.readerIndex, as: UInt16.self)
                context.writeAndFlush(wrapOutboundOut(ClientFrameEncoder.close(code: code)), promise: nil)
            }
            if frame.opcode == Opcode.ping.rawValue, autoPong {
                let pong = ClientFrameEncoder.encode(
                    opcode: Opcode.pong.rawValue, payload: Array(frame.payload.readableBytesView),
                    allocator: context.channel.allocator)
                context.writeAndFlush(wrapOutboundOut(pong), promise: nil)
            }
            sink.received(frame, on: context.channel)
        }
        if input.readableBytes > 0 { pending = input }
    }

    func channelInactive(context: ChannelHandlerContext) {
        switch state {
        case .refused(let response, let body):
            upgraded.fail(
                HandshakeFailure(status: response.status, headers: response.headers, body: String(buffer: body)))
        case .handshaking:
            upgraded.fail(HandshakeFailure(status: 0, headers: [:], body: "connection closed during handshake"))
        case .open:
            break
        }
        sink.disconnected()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}

extension Optional where Wrapped == ByteBuffer {
    fileprivate mutating func setOrAppend(_ input: inout ByteBuffer) {
        if var existing = self {
            self = nil
            existing.writeBuffer(&input)
            self = existing
        } else {
            self = input
        }
    }
}
