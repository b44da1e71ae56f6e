import Hummingbird
import SwitchboardCore
import SwitchboardServer

/// A request's JSON body, read whole (within the size limit) by the same scanner as the client protocol's
/// commands (`JSONObject`): a `data` field goes to subscribers as the bytes the backend sent. A missing or
/// mistyped field is error 100 naming it.
enum APIRequest {
    static func read(_ request: Request, limit: Int) async throws -> JSONObject {
        var request = request
        let body = try await request.collectBody(upTo: limit)
        guard body.readableBytes > 0 else { return try JSONObject(parsing: "{}") }
        do {
            return try JSONObject(parsing: body.readableBytesView)
        } catch {
            throw ProtocolError.badRequest("the body must be a JSON object")
        }
    }
}

extension JSONObject {
    /// Any JSON value that must be there, as its exact text.
    func requiredJSON(_ key: String) throws -> String {
        guard let value = json(key) else { throw ProtocolError.badRequest("missing \(key)") }
        return value
    }

    /// An array of strings that must be there.
    func requiredStrings(_ key: String) throws -> [String] {
        guard let value = try strings(key) else { throw ProtocolError.badRequest("missing \(key)") }
        return value
    }
}
