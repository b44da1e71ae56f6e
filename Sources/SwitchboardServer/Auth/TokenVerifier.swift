import AsyncHTTPClient
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore

/// Where tokens come from and what they must say: the keys, a JWKS URL, the claim rules.
public struct AuthConfiguration: Sendable {
    /// Secrets, public keys and JWKS documents configured directly; replaceable on reload. Default none.
    public var keys: [TokenKey] = []
    /// A JWKS fetched over HTTP(S): at start, again when a token names an unknown `kid` (at most once per
    /// `jwksMinimumRefetchInterval`), and in the background once the copy is older than `jwksMaximumAge`.
    public var jwksURL: String?
    /// The least time between two fetches of `jwksURL`, whatever tokens arrive. Default 30 s.
    public var jwksMinimumRefetchInterval = TimeAmount.seconds(30)
    /// A fetched JWKS older than this is fetched again in the background. Default 1 h.
    public var jwksMaximumAge = TimeAmount.hours(1)
    /// The claim checks (leeway, audience, issuer) every token goes through.
    public var rules = TokenRules()
    /// Whether connections without a token (or with an empty `sub`) are accepted. Default: only when no
    /// key is configured (a development server).
    public var allowAnonymous: Bool?
    /// How long a connection that has not authenticated (no token in the upgrade) has to send `connect`.
    /// Default 5 s.
    public var connectTimeout = TimeAmount.seconds(5)
    /// How long before a token's expiry the server sends the `refresh` push. Default 30 s.
    public var refreshNotice = TimeAmount.seconds(30)
    /// A refused token is logged at most once per this interval per client address. Default 60 s.
    public var failureLogInterval = TimeAmount.seconds(60)

    /// No keys and no JWKS URL: a development setup where anonymous connections are accepted.
    public init() {}

    /// `allowAnonymous` if set; otherwise true exactly when neither `keys` nor `jwksURL` is configured.
    public var anonymousAllowed: Bool { allowAnonymous ?? (keys.isEmpty && jwksURL == nil) }
}

/// Verifies connection, refresh and subscription tokens. Keys known at the time are checked
/// synchronously; a token naming an unknown key waits for one JWKS refetch.
public final class TokenVerifier: Sendable {
    /// The configuration the verifier was made with. `replaceKeys(_:)` does not update its `keys`.
    public let configuration: AuthConfiguration
    private let logger: Logger
    private let clock: @Sendable () -> Double
    // Lock: guards the key ring (static keys plus the last JWKS) and the fetch bookkeeping, swapped whole.
    private let state: NIOLockedValueBox<FetchState>

    private struct FetchState {
        /// The configured keys (a reload replaces them) and the last JWKS fetched, merged into `ring`.
        var staticKeys: TokenKeyRing
        var fetched: TokenKeyRing?
        var ring: TokenKeyRing
        var lastAttempt: NIODeadline?
        var lastSuccess: NIODeadline?
        var inFlight: Task<Void, Never>?
    }

    /// Makes the key ring and fetches the JWKS once (a failed first fetch is logged, not fatal: the
    /// next token with an unknown key tries again).
    ///
    /// - Parameters:
    ///   - clock: the current Unix time in seconds (tests move it).
    ///   - configuration: the keys and claim rules.
    ///   - logger: where key fetches and refusals are logged.
    public static func make(
        _ configuration: AuthConfiguration, logger: Logger = Logger(label: "switchboard.auth"),
        clock: @escaping @Sendable () -> Double = { Date().timeIntervalSince1970 }
    ) async throws -> TokenVerifier {
        let ring = try await checkedKeys(configuration)
        let verifier = TokenVerifier(configuration, ring: ring, logger: logger, clock: clock)
        if configuration.jwksURL != nil {
            await verifier.refetch()
            // The interval limits refetches for unknown keys; the first one may come right away.
            verifier.state.withLockedValue { $0.lastAttempt = nil }
        }
        return verifier
    }

    /// Throws what `make` refuses (a key that cannot be used, a JWKS URL not over HTTPS), without fetching
    /// anything: what `check-config` runs.
    public static func check(_ configuration: AuthConfiguration) async throws {
        _ = try await checkedKeys(configuration)
    }

    private static func checkedKeys(_ configuration: AuthConfiguration) async throws -> TokenKeyRing {
        if let url = configuration.jwksURL {
            guard let parsed = URL(string: url), let scheme = parsed.scheme?.lowercased(), let host = parsed.host,
                scheme == "https" || (scheme == "http" && isLoopbackHost(host))
            else {
                // Over plain HTTP anyone on the path could hand the server their own signing key.
                throw TokenKeyError(description: "the JWKS URL must be https:// (http:// only on loopback): \(url)")
            }
        }
        return try await TokenKeyRing.make(configuration.keys)
    }

    private init(
        _ configuration: AuthConfiguration, ring: TokenKeyRing, logger: Logger, clock: @escaping @Sendable () -> Double
    ) {
        self.configuration = configuration
        self.logger = logger
        self.clock = clock
        self.state = NIOLockedValueBox(FetchState(staticKeys: ring, ring: ring))
    }

    /// Replaces the configured keys (secrets, public keys, JWKS file) on a reload; keys fetched from the
    /// JWKS URL stay. Throws, keeping the keys in use, when the new ones cannot be used.
    public func replaceKeys(_ keys: [TokenKey]) async throws {
        let ring = try await TokenKeyRing.make(keys)
        state.withLockedValue { state in
            state.staticKeys = ring
            state.ring = state.fetched.map { ring.merged(with: $0) } ?? ring
        }
    }

    /// The current Unix time, as tokens count it.
    public var now: Double { clock() }

    /// The moment on this host's monotonic clock when Unix time `unix` comes.
    public func deadline(_ unix: Double) -> NIODeadline { Self.deadline(unix, now: clock()) }

    static func deadline(_ unix: Double, now: Double) -> NIODeadline {
        let seconds = min(max(unix - now, 0), 10 * 365 * 24 * 3600)
        return .now() + .nanoseconds(Int64(seconds * 1e9))
    }

    /// Verifies a connection token (upgrade, `connect`, `refresh`): a subscription token is refused.
    public func verifyConnectionToken(_ token: String, on eventLoop: any EventLoop) -> EventLoopFuture<TokenClaims> {
        verify(token, on: eventLoop).flatMapThrowing { claims in
            guard claims.channel == nil else { throw TokenFailure.subscriptionToken }
            return claims
        }
    }

    /// Verifies `token`, completing on `eventLoop` with its claims or failing with a `TokenFailure`.
    /// Already complete unless the token names a key the server must fetch first.
    public func verify(_ token: String, on eventLoop: any EventLoop) -> EventLoopFuture<TokenClaims> {
        let ring = state.withLockedValue { state -> TokenKeyRing in
            if isStale(state) { _ = startFetch(&state) }
            return state.ring
        }
        let result = ring.verify(token, now: clock(), rules: configuration.rules)
        guard case .failure(.unknownKey) = result, configuration.jwksURL != nil,
            let fetch = state.withLockedValue({ startFetchIfAllowed(&$0) })
        else {
            return eventLoop.makeCompletedFuture(result.mapError { $0 as any Error })
        }
        let promise = eventLoop.makePromise(of: TokenClaims.self)
        promise.completeWithTask {
            await fetch.value
            let ring = self.state.withLockedValue { $0.ring }
            return try ring.verify(token, now: self.clock(), rules: self.configuration.rules).get()
        }
        return promise.futureResult
    }

    /// The copy is old and no fetch was tried within the interval (while the endpoint is down, a retry
    /// per interval, not one per token).
    private func isStale(_ state: FetchState) -> Bool {
        guard configuration.jwksURL != nil, state.inFlight == nil, let last = state.lastSuccess else { return false }
        return last + configuration.jwksMaximumAge < .now() && attemptAllowed(state)
    }

    private func attemptAllowed(_ state: FetchState) -> Bool {
        state.lastAttempt.map { $0 + configuration.jwksMinimumRefetchInterval < .now() } ?? true
    }

    /// The fetch under way, or a new one if none was tried within the interval; nil otherwise. Decided and
    /// started under the lock, so however many tokens ask at once, one request goes out.
    private func startFetchIfAllowed(_ state: inout FetchState) -> Task<Void, Never>? {
        if let running = state.inFlight { return running }
        guard attemptAllowed(state) else { return nil }
        return startFetch(&state)
    }

    private func startFetch(_ state: inout FetchState) -> Task<Void, Never> {
        if let running = state.inFlight { return running }
        state.lastAttempt = .now()
        let task = Task { await self.fetch() }
        state.inFlight = task
        return task
    }

    /// Fetches the JWKS now, or waits for the fetch already under way.
    func refetch() async {
        await state.withLockedValue { startFetch(&$0) }.value
    }

    /// Follows no redirects: a redirect could lead from the https URL to plain http.
    private static let client = HTTPClient(
        eventLoopGroupProvider: .singleton, configuration: .init(redirectConfiguration: .disallow))

    private func fetch() async {
        defer { state.withLockedValue { $0.inFlight = nil } }
        guard let url = configuration.jwksURL else { return }
        do {
            let request = HTTPClientRequest(url: url)
            let response = try await Self.client.execute(request, timeout: .seconds(10))
            guard response.status == .ok else { throw TokenKeyError(description: "HTTP \(response.status.code)") }
            let body = try await response.body.collect(upTo: 1 << 20)
            // A set with no usable key is a failed fetch: keep the keys already known.
            let fetched = try await TokenKeyRing.make([.jwks(json: String(buffer: body))])
            state.withLockedValue {
                $0.fetched = fetched
                $0.ring = $0.staticKeys.merged(with: fetched)
                $0.lastSuccess = .now()
            }
            logger.info("JWKS fetched", metadata: ["url": "\(url)"])
        } catch {
            logger.warning(
                "JWKS fetch failed; keeping the keys already known", metadata: ["url": "\(url)", "error": "\(error)"])
        }
    }
}

/// Whether `host` (a name or an IP address) is this machine only: localhost, ::1 or 127.0.0.0/8.
public func isLoopbackHost(_ host: String) -> Bool {
    var host = host
    if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
    if host.lowercased() == "localhost" { return true }
    // inet_pton's strict parse: a name that merely looks like an address is not one.
    guard let address = try? SocketAddress(ipAddress: host, port: 0), let text = address.ipAddress else {
        return false
    }
    switch address {
    case .v4: return text.hasPrefix("127.")
    case .v6: return text == "::1" || text.hasPrefix("::ffff:127.")
    default: return false
    }
}
