/// permessage-deflate (RFC 7692) as the operator configures it. The server never keeps a compression
/// context between its own messages (`server_no_context_takeover` in every answer): one compressed frame
/// then serves every receiver that negotiated the same window, and an idle connection holds no zlib state.
public struct DeflateOptions: Sendable, Equatable {
    /// Messages whose payload is smaller than this many bytes go out uncompressed: below a few hundred
    /// bytes deflate saves next to nothing and still costs a zlib pass. Default 256.
    public var minSize = 256
    /// zlib compression level, 1 (fastest) to 9 (smallest). Default 1: a broadcast is compressed once per
    /// loop, but on the delivery path, so speed matters more than the last few percent.
    public var level = 1
    /// Let clients keep their compression context between messages (better ratio for streams of similar
    /// messages), at the price of an inflate state and a 32 KiB window held by every connection that has
    /// sent a compressed message. Default false: the answer asks for `client_no_context_takeover`.
    public var clientContextTakeover = false

    /// The defaults are those of the properties: compress from 256 bytes, level 1, no client context takeover.
    public init(minSize: Int = 256, level: Int = 1, clientContextTakeover: Bool = false) {
        self.minSize = minSize
        self.level = level
        self.clientContextTakeover = clientContextTakeover
    }
}
