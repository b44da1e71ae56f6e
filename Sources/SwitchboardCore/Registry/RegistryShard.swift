/// One shard's tables: connections by id and by user. Owned by one event loop, so it needs no lock;
/// insert, remove and lookups are O(1).
public struct RegistryShard<Value> {
    public private(set) var byID: [ConnectionID: Value] = [:]
    private var byUser: [String: Set<ConnectionID>] = [:]
    private var userOf: [ConnectionID: String] = [:]

    public init() {}

    public var count: Int { byID.count }
    public var userCount: Int { byUser.count }

    public mutating func insert(_ value: Value, id: ConnectionID, user: String?) {
        byID[id] = value
        if let user {
            byUser[user, default: []].insert(id)
            userOf[id] = user
        }
    }

    @discardableResult
    public mutating func remove(_ id: ConnectionID) -> Value? {
        guard let value = byID.removeValue(forKey: id) else { return nil }
        if let user = userOf.removeValue(forKey: id) {
            byUser[user]?.remove(id)
            if byUser[user]?.isEmpty == true { byUser[user] = nil }
        }
        return value
    }

    public subscript(id: ConnectionID) -> Value? { byID[id] }

    public func connections(ofUser user: String) -> Set<ConnectionID> { byUser[user] ?? [] }

    public func user(of id: ConnectionID) -> String? { userOf[id] }
}
