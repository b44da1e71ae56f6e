/// One shard's tables: connections by id and by user. Owned by one event loop, so it needs no lock;
/// insert, remove and lookups are O(1). The caller names the user again on removal (a connection
/// knows its own user), so no second id → user table is kept per connection.
package struct RegistryShard<Value> {
    package private(set) var byID: [ConnectionID: Value] = [:]
    private var byUser: [String: Set<ConnectionID>] = [:]

    package init() {}

    package var count: Int { byID.count }
    package var userCount: Int { byUser.count }

    package mutating func insert(_ value: Value, id: ConnectionID, user: String?) {
        byID[id] = value
        if let user { byUser[user, default: []].insert(id) }
    }

    @discardableResult
    package mutating func remove(_ id: ConnectionID, user: String?) -> Value? {
        guard let value = byID.removeValue(forKey: id) else { return nil }
        if let user {
            byUser[user]?.remove(id)
            if byUser[user]?.isEmpty == true { byUser[user] = nil }
        }
        return value
    }

    package subscript(id: ConnectionID) -> Value? { byID[id] }

    package func connections(ofUser user: String) -> Set<ConnectionID> { byUser[user] ?? [] }
}
