/// Which web pages may open a WebSocket here. Browsers send `Origin` and let any page connect to any
/// server with the user's cookies (cross-site WebSocket hijacking), so by default a request that
/// carries an `Origin` must come from the server's own origin (its `Host`), as gorilla/websocket
/// checks. Clients that send no `Origin` (not browsers) are not affected.
public enum OriginPolicy: Sendable, Equatable {
    /// `Origin`, when present, must name the host the request was sent to.
    case sameOrigin
    /// `Origin`, when present, must name the host the request was sent to or be one of these
    /// (`https://app.example.com`, compared without letter case and default ports): the list widens
    /// the default, so adding a second origin never locks out the server's own pages.
    case allowList([String])
    /// Any origin: for servers that authenticate every connection by token, not by cookie.
    case any

    /// Whether a request with these `Origin` and `Host` headers may upgrade.
    public func allows(origin: String?, host: String?) -> Bool {
        guard let origin else { return true }
        switch self {
        case .any:
            return true
        case .sameOrigin:
            return Self.isSameOrigin(origin, host: host)
        case .allowList(let allowed):
            let candidate = Self.canonical(origin)
            return Self.isSameOrigin(origin, host: host) || allowed.contains { Self.canonical($0) == candidate }
        }
    }

    private static func isSameOrigin(_ origin: String, host: String?) -> Bool {
        guard let host, let authority = authority(of: origin) else { return false }
        return normalized(authority, scheme: scheme(of: origin)) == normalized(host, scheme: nil)
    }

    private static func scheme(of origin: String) -> String? {
        origin.firstRange(of: "://").map { origin[..<$0.lowerBound].lowercased() }
    }

    private static func authority(of origin: String) -> String? {
        guard let separator = origin.firstRange(of: "://") else { return nil }
        let rest = origin[separator.upperBound...]
        return String(rest.prefix { $0 != "/" })
    }

    /// host[:port] in lower case, without the scheme's default port.
    private static func normalized(_ authority: String, scheme: String?) -> String {
        let lower = authority.lowercased()
        for (defaultScheme, port) in [("http", ":80"), ("https", ":443"), ("ws", ":80"), ("wss", ":443")]
        where (scheme == nil || scheme == defaultScheme) && lower.hasSuffix(port) {
            return String(lower.dropLast(port.count))
        }
        return lower
    }

    private static func canonical(_ origin: String) -> String {
        let trimmed = origin.hasSuffix("/") ? String(origin.dropLast()) : origin
        guard let scheme = scheme(of: trimmed), let authority = authority(of: trimmed) else {
            return trimmed.lowercased()
        }
        return scheme + "://" + normalized(authority, scheme: scheme)
    }
}
