import NIOCore

/// Turns frame events into whole messages: enforces the fragmentation rules of RFC 6455 §5.4, the
/// maximum message size, UTF-8 validity of text (fragment by fragment) and of close reasons, and the
/// close-code rules of §7.4, and inflates compressed messages (RFC 7692) within the same size limit.
/// Pure logic: the channel handler feeds it bytes and acts on the results.
package struct MessageAssembler {
    private enum DataKind: Sendable { case text, binary }

    private var reader: FrameReader
    private let maxMessageSize: Int
    private var current: FrameHeader?
    private var messageKind: DataKind?
    private var message: ByteBuffer?
    private var messageSize = 0
    private var control: ByteBuffer?
    private var utf8 = UTF8Validator()
    /// Where inflaters come from when permessage-deflate was negotiated; nil otherwise.
    private let inflaters: InflaterPool?
    /// The client keeps its compression context between messages, so the inflater stays with the connection.
    private let contextTakeover: Bool
    /// Borrowed while a compressed message arrives (kept between messages with context takeover).
    private var inflater: MessageInflater?
    private var messageCompressed = false
    /// Frames begun since `takeFrameCount` was last called: what the inbound frame rate limit counts.
    private var framesBegun = 0

    package init(maxMessageSize: Int, inflaters: InflaterPool? = nil, contextTakeover: Bool = false) {
        self.maxMessageSize = maxMessageSize
        self.reader = FrameReader(maxFrameSize: maxMessageSize, allowsCompression: inflaters != nil)
        self.inflaters = inflaters
        self.contextTakeover = contextTakeover
    }

    /// Gives a borrowed inflater back when the connection ends (mid-message, or holding its context).
    package mutating func release() {
        if let inflater { inflaters?.give(inflater) }
        inflater = nil
    }

    /// Returns the next complete message, or nil when more bytes are needed. Throws the failure to
    /// close with as soon as the input is known to be bad.
    package mutating func next(from buffer: inout ByteBuffer) throws(WebSocketFailure) -> InboundMessage? {
        while let event = try reader.next(from: &buffer) {
            switch event {
            case .header(let header):
                try begin(header)
            case .payload(let chunk):
                try append(chunk)
            case .frameEnd:
                if let message = try endFrame() { return message }
            }
        }
        return nil
    }

    /// The frames begun since the last call.
    package mutating func takeFrameCount() -> Int {
        defer { framesBegun = 0 }
        return framesBegun
    }

    private mutating func begin(_ header: FrameHeader) throws(WebSocketFailure) {
        current = header
        framesBegun += 1
        switch header.opcode {
        case .close, .ping, .pong:
            control = nil
        case .text, .binary:
            guard messageKind == nil else {
                throw .protocolError("new data frame while a fragmented message is in progress")
            }
            messageKind = header.opcode == .text ? .text : .binary
            messageSize = 0
            message = nil
            utf8.reset()
            messageCompressed = header.compressed
            if header.compressed, inflater == nil, let inflaters { inflater = try inflaters.take() }
            try reserve(header.payloadLength)
        case .continuation:
            guard messageKind != nil else { throw .protocolError("continuation frame without a message to continue") }
            try reserve(header.payloadLength)
        }
    }

    private mutating func reserve(_ length: Int) throws(WebSocketFailure) {
        messageSize += length
        guard messageSize <= maxMessageSize else { throw .tooBig(maxMessageSize) }
    }

    private mutating func append(_ chunk: ByteBuffer) throws(WebSocketFailure) {
        guard let header = current else { return }
        if header.opcode.isControl {
            control.appendOrAdopt(chunk)
            return
        }
        if messageCompressed, let inflater { return try inflate(chunk, with: inflater) }
        if messageKind == .text {
            let valid = chunk.withUnsafeReadableBytes { utf8.feed($0) }
            guard valid else { throw .invalidUTF8() }
        }
        message.appendOrAdopt(chunk)
    }

    private mutating func endFrame() throws(WebSocketFailure) -> InboundMessage? {
        guard let header = current else { return nil }
        current = nil
        let empty = ByteBuffer()
        switch header.opcode {
        case .ping: return .ping(control ?? empty)
        case .pong: return .pong(control ?? empty)
        case .close: return try Self.parseClose(control ?? empty)
        case .text, .binary, .continuation:
            guard header.fin, let kind = messageKind else { return nil }
            if messageCompressed { try endCompressedMessage() }
            let payload = message ?? empty
            messageKind = nil
            message = nil
            if kind == .text {
                guard utf8.isAtBoundary else { throw .invalidUTF8("text message ends inside a UTF-8 sequence") }
                return .text(payload)
            }
            return .binary(payload)
        }
    }

    private mutating func inflate(_ chunk: ByteBuffer, with inflater: MessageInflater) throws(WebSocketFailure) {
        let isText = messageKind == .text
        var validator = utf8
        var output = message
        message = nil  // one reference, so appending does not copy
        try inflater.inflate(chunk, into: &output, limit: maxMessageSize) { !isText || validator.feed($0) }
        utf8 = validator
        message = output
    }

    private mutating func endCompressedMessage() throws(WebSocketFailure) {
        guard let inflater else { return }
        try inflate(MessageInflater.tail, with: inflater)
        messageCompressed = false
        if contextTakeover {
            inflater.endMessage()
        } else {
            release()
        }
    }

    static func parseClose(_ payload: ByteBuffer) throws(WebSocketFailure) -> InboundMessage {
        var payload = payload
        guard payload.readableBytes > 0 else { return .close(code: nil, reason: "") }
        guard let raw = payload.readInteger(as: UInt16.self) else {
            throw .protocolError("close frame payload of one byte")
        }
        let code = CloseCode(raw)
        guard code.isValidOnWire else { throw .protocolError("invalid close code \(raw)") }
        var validator = UTF8Validator()
        let valid = payload.withUnsafeReadableBytes { validator.feed($0) } && validator.isAtBoundary
        guard valid else { throw .invalidUTF8("close reason is not valid UTF-8") }
        return .close(code: code, reason: payload.readString(length: payload.readableBytes) ?? "")
    }
}

extension Optional where Wrapped == ByteBuffer {
    /// Keeps the first chunk as is (no copy for the common single-frame message) and appends later ones.
    fileprivate mutating func appendOrAdopt(_ chunk: ByteBuffer) {
        if var existing = self {
            self = nil  // drop the extra reference so the append does not copy on write
            existing.writeImmutableBuffer(chunk)
            self = existing
        } else {
            self = chunk
        }
    }
}
