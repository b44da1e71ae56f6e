import Foundation

/// The query of a request's URI (`/sse?channel=a&channel=b&token=…`), percent-decoded, in order; a name
/// may come several times. Parameters that do not decode are dropped (the caller then finds them missing).
public struct QueryParameters: Sendable {
    /// Every parameter, in the URI's order.
    public let items: [(name: String, value: String)]

    /// The parameters of `uri` (none without a `?`).
    public init(_ uri: String) {
        guard let mark = uri.firstIndex(of: "?") else {
            items = []
            return
        }
        items = uri[uri.index(after: mark)...].split(separator: "&").compactMap { pair in
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard let name = Self.decode(parts[0]) else { return nil }
            guard let value = parts.count > 1 ? Self.decode(parts[1]) : "" else { return nil }
            return (name, value)
        }
    }

    /// Every value of `name`, in order.
    public func all(_ name: String) -> [String] { items.filter { $0.name == name }.map(\.value) }

    /// The first value of `name`.
    public func first(_ name: String) -> String? { items.first { $0.name == name }?.value }

    private static func decode(_ part: Substring) -> String? {
        String(part).replacingOccurrences(of: "+", with: " ").removingPercentEncoding
    }
}
