/// A command from a client: `{"id": 1, "cmd": "subscribe", "channel": "chat:lobby", ...}`.
public struct ClientCommand: Sendable, Equatable {
    public enum Kind: Sendable, Equatable {
        case subscribe(channel: String, recover: StreamPosition?)
        case unsubscribe(channel: String)
        /// `data` is the publication's JSON, kept as the exact bytes the client sent.
        case publish(channel: String, data: String)
        case presence(channel: String)
        case history(channel: String, limit: Int, since: Int?)
        case ping
    }

    public let id: Int
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
        if let problem = fields.problem { return fail(problem) }
        guard let cmd = fields.cmd else { return fail("missing cmd") }
        if cmd == "ping" { return .success(ClientCommand(id: id, kind: .ping)) }
        guard ["subscribe", "unsubscribe", "publish", "presence", "history"].contains(cmd) else {
            return .failure(CommandFailure(id: id, error: .unknownCommand))
        }
        guard let channel = fields.channel else { return fail("missing channel") }
        let kind: Kind
        switch cmd {
        case "subscribe":
            kind = .subscribe(channel: channel, recover: fields.recover)
        case "unsubscribe":
            kind = .unsubscribe(channel: channel)
        case "publish":
            guard let data = fields.data.map(scanner.text) else { return fail("missing data") }
            kind = .publish(channel: channel, data: data)
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
        var recover: StreamPosition?
        var limit: Int?
        var since: Int?
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
            case "recover":
                recover = try typed(&scanner, else: "recover needs offset and epoch") { scanner in
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
            default: _ = try scanner.skipValue()
            }
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

public struct CommandFailure: Error, Equatable, Sendable {
    public let id: Int?
    public let error: ProtocolError
}

/// A place in a channel's stream: the offset of a publication and the epoch of the history it
/// belongs to. Offsets only compare within one epoch.
public struct StreamPosition: Sendable, Equatable {
    public var offset: Int
    public var epoch: String
    public init(offset: Int, epoch: String) {
        self.offset = offset
        self.epoch = epoch
    }
}
