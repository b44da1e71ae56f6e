import Foundation
import Hummingbird
import SwitchboardCore
import SwitchboardServer

/// A request's JSON body, read whole (within the size limit) and taken apart field by field: a missing
/// or mistyped field is error 100 naming it.
// @unchecked Sendable: the dictionary is parsed once from JSON and only read.
struct APIRequest: @unchecked Sendable {
    let fields: [String: Any]

    static func read(_ request: Request, limit: Int) async throws -> APIRequest {
        var request = request
        let body = try await request.collectBody(upTo: limit)
        guard body.readableBytes > 0 else { return APIRequest(fields: [:]) }
        guard let object = try? JSONSerialization.jsonObject(with: Data(buffer: body)) as? [String: Any] else {
            throw ProtocolError.badRequest("the body must be a JSON object")
        }
        return APIRequest(fields: object)
    }

    func string(_ key: String) throws -> String {
        guard let value = try optionalString(key) else { throw ProtocolError.badRequest("missing \(key)") }
        return value
    }

    func optionalString(_ key: String) throws -> String? {
        guard let value = fields[key] else { return nil }
        guard let string = value as? String else { throw ProtocolError.badRequest("\(key) must be a string") }
        return string
    }

    func strings(_ key: String) throws -> [String] {
        guard let value = fields[key] else { throw ProtocolError.badRequest("missing \(key)") }
        guard let strings = value as? [String] else {
            throw ProtocolError.badRequest("\(key) must be an array of strings")
        }
        return strings
    }

    func integer(_ key: String) throws -> Int? {
        guard let value = fields[key] else { return nil }
        guard let number = value as? NSNumber, !Self.isBool(number), let integer = Int(exactly: number.doubleValue)
        else { throw ProtocolError.badRequest("\(key) must be a whole number") }
        return integer
    }

    /// A number; null only where `nullable` (it then means the same as leaving the field out).
    func number(_ key: String, nullable: Bool = false) throws -> Double? {
        guard let value = fields[key], !(nullable && value is NSNull) else { return nil }
        guard let number = value as? NSNumber, !Self.isBool(number), number.doubleValue.isFinite else {
            throw ProtocolError.badRequest("\(key) must be a number")
        }
        return number.doubleValue
    }

    func bool(_ key: String) throws -> Bool? {
        guard let value = fields[key] else { return nil }
        guard let number = value as? NSNumber, Self.isBool(number) else {
            throw ProtocolError.badRequest("\(key) must be true or false")
        }
        return number.boolValue
    }

    /// Any JSON value, as compact JSON text.
    func json(_ key: String) throws -> String {
        guard let value = fields[key] else { throw ProtocolError.badRequest("missing \(key)") }
        guard let data = try? JSONSerialization.data(withJSONObject: value, options: [.fragmentsAllowed]) else {
            throw ProtocolError.badRequest("\(key) must be JSON")
        }
        return String(decoding: data, as: UTF8.self)
    }

    /// A connection id as the protocol prints it: `shard-sequence`.
    private static func isBool(_ number: NSNumber) -> Bool { String(cString: number.objCType) == "c" }
}
