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

    /// Whether a request with these `Origin` and `Host` headers may upgrade. The origin is the server's own
    /// only when it names the `Host` and that host is one of `ownHosts` (DNS rebinding makes a hostile
    /// page's name resolve here, so its Origin and Host agree).
    public func allows(origin: String?, host: String?, ownHosts: OwnHostNames = .any) -> Bool {
        guard let origin else { return true }
        switch self {
        case .any:
            return true
        case .sameOrigin:
            return Self.isSameOrigin(origin, host: host, ownHosts: ownHosts)
        case .allowList(let allowed):
            let candidate = Self.canonical(origin)
            return Self.isSameOrigin(origin, host: host, ownHosts: ownHosts)
                || allowed.contains { Self.canonical($0) == candidate }
        }
    }

    private static func isSameOrigin(_ origin: String, host: String?, ownHosts: OwnHostNames) -> Bool {
        guard let host, ownHosts.accepts(host), let authority = authority(of: origin) else { return false }
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

/// The names a server is reached by, for the same-origin check. On loopback (development, demo mode) only
/// loopback names are its own: a page on a rebinding domain reaches 127.0.0.1 under its own name, which
/// is not. With configured public hosts, only those. Otherwise any `Host` (a server behind many names).
public enum OwnHostNames: Sendable, Equatable {
    /// Whatever `Host` the request names (a server reached by many names, behind a proxy that checks them).
    case any
    /// `localhost`, `*.localhost`, 127.0.0.0/8 and `::1` only.
    case loopback
    /// Host names, without ports, compared without letter case.
    case listed([String])

    /// The default for a server bound to `bindHost` with these configured names.
    public init(bindHost: String, publicHosts: [String]) {
        if !publicHosts.isEmpty {
            self = .listed(publicHosts.map { Self.name(of: $0) })
        } else if Self.isLoopbackName(bindHost) {
            self = .loopback
        } else {
            self = .any
        }
    }

    /// Whether a `Host` header (name and optional port) names this server.
    public func accepts(_ host: String) -> Bool {
        switch self {
        case .any: return true
        case .loopback: return Self.isLoopbackName(Self.name(of: host))
        case .listed(let names): return names.contains(Self.name(of: host))
        }
    }

    /// The name of a `host[:port]`, `[v6]:port` or bare address, in lower case.
    static func name(of host: String) -> String {
        let lower = host.lowercased()
        if lower.hasPrefix("["), let close = lower.firstIndex(of: "]") {
            return String(lower[lower.index(after: lower.startIndex)..<close])
        }
        if lower.filter({ $0 == ":" }).count == 1, let colon = lower.firstIndex(of: ":") {
            return String(lower[..<colon])
        }
        return lower
    }

    static func isLoopbackName(_ name: String) -> Bool {
        if name == "localhost" || name.hasSuffix(".localhost") { return true }
        guard let bytes = AddressRanges.bytes(name) else { return false }
        return bytes.count == 4 ? bytes[0] == 127 : bytes == Array(repeating: 0, count: 15) + [1]
    }
}
