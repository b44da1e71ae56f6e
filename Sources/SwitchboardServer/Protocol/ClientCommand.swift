/// A command from a client: `{"id": 1, "cmd": "subscribe", "channel": "chat:lobby", ...}`.
public struct ClientCommand: Sendable, Equatable {
    /// The command and its arguments, by `cmd` (docs/PROTOCOL.md).
    public enum Kind: Sendable, Equatable {
        /// Authenticates the connection (the first command); `recover` names, per channel of the token's
        /// `channels` claim, the last position seen.
        case connect(token: String?, recover: [String: StreamPosition])
        /// A new token for the connection's user, before the current one expires.
        case refresh(token: String)
        /// `token`: a subscription token, for namespaces that require one.
        /// `data`: what the application's backend gets with the subscribe proxy (any JSON value, as sent).
        case subscribe(channel: String, recover: StreamPosition?, token: String? = nil, data: String? = nil)
        case unsubscribe(channel: String)
        /// `data` is the publication's JSON, kept as the exact bytes the client sent; `idempotencyKey`
        /// makes a repeat within the server's window answer with the first one's offset.
        case publish(channel: String, data: String, idempotencyKey: String? = nil)
        /// A request for the application's backend (the RPC proxy): `method` names it, `data` (any JSON
        /// value, as sent) goes with it.
        case rpc(method: String, data: String?)
        case presence(channel: String)
        case history(channel: String, limit: Int, since: Int?)
        case ping
    }

    /// The client's id for the command, repeated in the reply so it can match replies to requests.
    public let id: Int
    /// What the client asks for.
    public let kind: Kind

    /// Parses one text message. A message that is not a JSON object with an integer `id` cannot be
    /// answered and fails with `id` nil; anything else wrong is answered under its `id`.
    public static func parse(_ bytes: some Collection<UInt8>) -> Result<ClientCommand, CommandFailure> {
        if let result = bytes.withContiguousStorageIfAvailable({ parse(UnsafeRawBufferPointer($0)) }) {
            return result
        }
        return Array(bytes).withUnsafeBytes { parse($0) }
    }

    private static func parse(_ bytes: UnsafeRawBufferPointer) -> Result<ClientCommand, CommandFailure> {
        var fields = Fields()
        var scanner = JSONScanner(bytes)
        do {
            try scanner.readObject { scanner, key in try fields.read(key, from: &scanner) }
            scanner.skipWhitespace()
            guard scanner.atEnd else { throw JSONScanner.Failure() }
        } catch {
            return .failure(CommandFailure(id: nil, error: .badRequest("not a JSON object")))
        }
        guard let id = fields.id else {
            return .failure(CommandFailure(id: nil, error: .badRequest("missing or invalid id")))
        }
        func fail(_ message: String) -> Result<ClientCommand, CommandFailure> {
            .failure(CommandFailure(id: id, error: .badRequest(message)))
        }
        if scanner.tooDeep { return fail("nested deeper than \(JSONScanner.maxDepth) levels") }
        if let problem = fields.problem { return fail(problem) }
        guard let cmd = fields.cmd else { return fail("missing cmd") }
        if cmd == "ping" { return .success(ClientCommand(id: id, kind: .ping)) }
        if cmd == "connect" {
            var positions: [String: StreamPosition] = [:]
            if let range = fields.recover {
                guard let parsed = Fields.positions(UnsafeRawBufferPointer(rebasing: bytes[range])) else {
                    return fail("recover must map channels to {offset, epoch}")
                }
                positions = parsed
            }
            return .success(ClientCommand(id: id, kind: .connect(token: fields.token, recover: positions)))
        }
        if cmd == "rpc" {
            guard let method = fields.method else { return fail("missing method") }
            return .success(ClientCommand(id: id, kind: .rpc(method: method, data: fields.data.map(scanner.text))))
        }
        if cmd == "refresh" {
            guard let token = fields.token else { return fail("missing token") }
            return .success(ClientCommand(id: id, kind: .refresh(token: token)))
        }
        guard ["subscribe", "unsubscribe", "publish", "presence", "history"].contains(cmd) else {
            return .failure(CommandFailure(id: id, error: .unknownCommand))
        }
        guard let channel = fields.channel else { return fail("missing channel") }
        let kind: Kind
        switch cmd {
        case "subscribe":
            var recover: StreamPosition?
            if let range = fields.recover {
                guard let position = Fields.position(UnsafeRawBufferPointer(rebasing: bytes[range])) else {
                    return fail("recover needs offset and epoch")
                }
                recover = position
            }
            kind = .subscribe(
                channel: channel, recover: recover, token: fields.token, data: fields.data.map(scanner.text))
        case "unsubscribe":
            kind = .unsubscribe(channel: channel)
        case "publish":
            guard let data = fields.data.map(scanner.text) else { return fail("missing data") }
            if let key = fields.idempotencyKey, !IdempotencyKey.isValid(key) {
                return fail("idempotency_key must be 1–\(IdempotencyKey.maxBytes) bytes")
            }
            kind = .publish(channel: channel, data: data, idempotencyKey: fields.idempotencyKey)
        case "presence":
            kind = .presence(channel: channel)
        default:
            guard (fields.limit ?? 0) >= 0 else { return fail("limit must not be negative") }
            kind = .history(channel: channel, limit: fields.limit ?? 100, since: fields.since)
        }
        return .success(ClientCommand(id: id, kind: kind))
    }

    /// The fields a command may carry, read in one pass. A field of the wrong type is remembered as
    /// `problem` (answered under the command's id) once the whole object proved to be JSON.
    private struct Fields {
        var id: Int?
        var cmd: String?
        var channel: String?
        var data: Range<Int>?
        /// Read once `cmd` is known: a position for subscribe, a map of them for connect.
        var recover: Range<Int>?
        var token: String?
        var limit: Int?
        var since: Int?
        var method: String?
        var idempotencyKey: String?
        var problem: String?

        mutating func read(_ key: String, from scanner: inout JSONScanner) throws {
            switch key {
            case "id":
                id = try typed(&scanner) { try $0.readInteger() }.flatMap { $0 >= 0 ? $0 : nil }
            case "cmd": cmd = try typed(&scanner, else: "cmd must be a string") { try $0.readString() }
            case "channel": channel = try typed(&scanner, else: "channel must be a string") { try $0.readString() }
            case "data": data = try scanner.skipValue()
            case "limit": limit = try typed(&scanner, else: "limit must be a whole number") { try $0.readInteger() }
            case "since": since = try typed(&scanner, else: "since must be a whole number") { try $0.readInteger() }
            case "recover": recover = try scanner.skipValue()
            case "token": token = try typed(&scanner, else: "token must be a string") { try $0.readString() }
            case "method": method = try typed(&scanner, else: "method must be a string") { try $0.readString() }
            case "idempotency_key":
                idempotencyKey = try typed(&scanner, else: "idempotency_key must be a string") { try $0.readString() }
            default: _ = try scanner.skipValue()
            }
        }

        static func position(_ bytes: UnsafeRawBufferPointer) -> StreamPosition? {
            var scanner = JSONScanner(bytes)
            return try? position(&scanner)
        }

        static func positions(_ bytes: UnsafeRawBufferPointer) -> [String: StreamPosition]? {
            var scanner = JSONScanner(bytes)
            var positions: [String: StreamPosition] = [:]
            do {
                try scanner.readObject { scanner, channel in positions[channel] = try position(&scanner) }
            } catch {
                return nil
            }
            return positions
        }

        private static func position(_ scanner: inout JSONScanner) throws -> StreamPosition {
            var offset: Int?
            var epoch: String?
            try scanner.readObject { scanner, key in
                switch key {
                case "offset": offset = try scanner.readInteger()
                case "epoch": epoch = try scanner.readString()
                default: _ = try scanner.skipValue()
                }
            }
            guard let offset, let epoch else { throw JSONScanner.Failure() }
            return StreamPosition(offset: offset, epoch: epoch)
        }

        /// Reads a value with `read`; if it is valid JSON of another shape, skips it and notes `problem`.
        private mutating func typed<T>(
            _ scanner: inout JSONScanner, else problem: String? = nil, _ read: (inout JSONScanner) throws -> T
        ) throws -> T? {
            scanner.skipWhitespace()
            let start = scanner.index
            if let value = try? read(&scanner) { return value }
            scanner.rewind(to: start)
            _ = try scanner.skipValue()
            if let problem, self.problem == nil { self.problem = problem }
            return nil
        }
    }
}

/// A message that is not a valid command, with the error to answer it with.
public struct CommandFailure: Error, Equatable, Sendable {
    /// The command's `id` if one could be read; nil means answer with `"id": null`.
    public let id: Int?
    /// The error reply: 100 (bad request) or 101 (unknown command).
    public let error: ProtocolError
}

/// A place in a channel's stream: the offset of a publication and the epoch of the history it
/// belongs to. Offsets only compare within one epoch.
public struct StreamPosition: Sendable, Equatable {
    /// The offset of the newest publication the client has (from a push or a subscribe reply).
    public var offset: Int
    /// The epoch `offset` belongs to, as the server reported it.
    public var epoch: String
    /// A position as a client reports it in `recover`.
    public init(offset: Int, epoch: String) {
        self.offset = offset
        self.epoch = epoch
    }
}
