import ArgumentParser
import Foundation
import JWTKit

/// Prints a development token signed with the server's HMAC secret: try authentication without a backend.
struct TokenCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "token",
        abstract: "Print an HS256 token for a user, signed with --token-secret (or SWITCHBOARD_TOKEN_SECRET).",
        discussion: """
            For development: a backend issues real tokens. Connect with it in the `connect` command or as \
            `Authorization: Bearer TOKEN` (docs/PROTOCOL.md).
            """)

    @Option(help: "The user id (`sub`); an empty string makes an anonymous token.")
    var user: String

    @Option(help: "Presence data for the connection (`info`), as JSON.")
    var info: String?

    @Option(help: "Seconds until the token expires.")
    var ttl: Double = 3600

    @Option(help: "A channel to subscribe the connection to at connect (`channels`); repeat for several.")
    var channel: [String] = []

    @Option(help: "Make a subscription token for this channel (`channel` claim) instead.")
    var subscriptionChannel: String?

    @Option(help: "The HMAC secret (at least 32 bytes); default: SWITCHBOARD_TOKEN_SECRET.")
    var tokenSecret: String?

    func validate() throws {
        guard ttl > 0 else { throw ValidationError("--ttl must be > 0") }
        guard let secret = tokenSecret ?? ProcessInfo.processInfo.environment["SWITCHBOARD_TOKEN_SECRET"] else {
            throw ValidationError("give --token-secret or set SWITCHBOARD_TOKEN_SECRET")
        }
        guard secret.utf8.count >= 32 else { throw ValidationError("the secret must be at least 32 bytes") }
        if let info, (try? JSONSerialization.jsonObject(with: Data(info.utf8), options: [.fragmentsAllowed])) == nil {
            throw ValidationError("--info must be JSON")
        }
    }

    func run() async throws {
        let secret = tokenSecret ?? ProcessInfo.processInfo.environment["SWITCHBOARD_TOKEN_SECRET"] ?? ""
        var claims: [String: Any] = ["sub": user, "exp": Int(Date().timeIntervalSince1970 + ttl)]
        if let info {
            claims["info"] = try JSONSerialization.jsonObject(with: Data(info.utf8), options: [.fragmentsAllowed])
        }
        if !channel.isEmpty { claims["channels"] = channel }
        if let subscriptionChannel { claims["channel"] = subscriptionChannel }
        let keys = await JWTKeyCollection().add(hmac: HMACKey(from: secret), digestAlgorithm: .sha256)
        print(try await keys.sign(AnyClaims(json: try JSONSerialization.data(withJSONObject: claims))))
    }
}

/// Claims given as a JSON object, signed as they are.
private struct AnyClaims: JWTPayload {
    let json: Data

    init(json: Data) { self.json = json }

    init(from decoder: any Decoder) throws {
        throw DecodingError.dataCorrupted(.init(codingPath: [], debugDescription: "sign only"))
    }

    func encode(to encoder: any Encoder) throws {
        let object = try JSONDecoder().decode([String: JSONValue].self, from: json)
        try object.encode(to: encoder)
    }

    func verify(using algorithm: some JWTAlgorithm) async throws {}
}

/// Any JSON value, to pass claims through Codable unchanged.
private enum JSONValue: Codable {
    case null, bool(Bool), number(Double), string(String), array([JSONValue]), object([String: JSONValue])

    init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() {
            self = .null
        } else if let value = try? container.decode(Bool.self) {
            self = .bool(value)
        } else if let value = try? container.decode(Double.self) {
            self = .number(value)
        } else if let value = try? container.decode(String.self) {
            self = .string(value)
        } else if let value = try? container.decode([JSONValue].self) {
            self = .array(value)
        } else {
            self = .object(try container.decode([String: JSONValue].self))
        }
    }

    func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .null: try container.encodeNil()
        case .bool(let value): try container.encode(value)
        case .number(let value):
            if value == value.rounded(), abs(value) < 1e15 {
                try container.encode(Int64(value))
            } else {
                try container.encode(value)
            }
        case .string(let value): try container.encode(value)
        case .array(let value): try container.encode(value)
        case .object(let value): try container.encode(value)
        }
    }
}
