import Foundation
import JWTKit
import MetricsTestKit
import NIOCore
import NIOPosix
import SwitchboardClient
import SwitchboardCore
import SwitchboardServer
import SwitchboardTestSupport
import Testing

/// Token authentication over real sockets: the `connect` command, the upgrade's bearer header, every
/// kind of refused token, expiry with refresh, and keys from HMAC secrets, PEM files and a JWKS server.
@Suite("Authentication", .serialized, .timeLimit(.minutes(5)))
struct AuthTests {
    private func server(
        _ auth: AuthConfiguration = .testDefaults(), metrics: TestMetrics? = nil,
        channels: (inout ChannelsConfiguration) -> Void = { _ in }
    ) async throws -> ChannelsServer {
        try await ChannelsServer.start(
            verifier: try await TokenVerifier.make(auth), metrics: metrics, channels: channels)
    }

    /// A user known only after the in-band `connect` is held to `maxConnectionsPerUser` too: the surplus
    /// connection is closed 1008 and never joins presence or gets its reply.
    @Test func connectionsPerUserCountInBandConnects() async throws {
        let server = try await ChannelsServer.start(
            verifier: try await TokenVerifier.make(.testDefaults()),
            transport: { $0.abuseLimits.maxConnectionsPerUser = 1 })
        try await finally({ await server.stop() }) {
            let token = try await TestKeys.sign(TestClaims(sub: "ada"), with: await TestKeys.hmac())
            let first = try await server.connect()
            #expect(try await first.call(["cmd": "connect", "token": token]).reply.ok?["user"] as? String == "ada")
            let second = try await server.connect()
            second.send(["cmd": "connect", "token": token])
            let close = try await second.client.waitForClose()
            #expect(close?.code == 1008)
            #expect(close?.reason.contains("too many connections for this user") == true)
            // The first connection's place is given back when it goes.
            await first.client.disconnect()
            try await eventually { server.server.hub.connectionCount == 0 }
            let third = try await server.connect()
            #expect(try await third.call(["cmd": "connect", "token": token]).reply.ok?["user"] as? String == "ada")
        }
    }

    /// A reload's new keys verify from then on; tokens signed with the replaced key are refused.
    @Test func replacedKeysTakeEffectAtOnce() async throws {
        let verifier = try await TokenVerifier.make(.testDefaults())
        let server = try await ChannelsServer.start(verifier: verifier)
        try await finally({ await server.stop() }) {
            let newSecret = "a-rotated-secret-of-at-least-32-bytes-long"
            try await verifier.replaceKeys([.hmac(secret: newSecret)])
            let old = try await TestKeys.sign(TestClaims(sub: "ada"), with: await TestKeys.hmac())
            let new = try await TestKeys.sign(TestClaims(sub: "bob"), with: await TestKeys.hmac(newSecret))
            let client = try await server.connect()
            #expect(try await client.call(["cmd": "connect", "token": new]).reply.ok?["user"] as? String == "bob")
            let refused = try await server.connect()
            #expect(try await refused.call(["cmd": "connect", "token": old]).reply.errorCode != nil)
            // Keys that cannot be used are refused and the ones in force stay.
            await #expect(throws: (any Error).self) { try await verifier.replaceKeys([.hmac(secret: "short")]) }
            let again = try await server.connect()
            #expect(try await again.call(["cmd": "connect", "token": new]).reply.ok?["user"] as? String == "bob")
        }
    }

    @Test func connectCommandAuthenticatesAndCarriesPresenceData() async throws {
        let server = try await server()
        try await finally({ await server.stop() }) {
            let token = try await TestKeys.sign(
                TestClaims(sub: "ada", info: ["name": "Ada"]), with: await TestKeys.hmac())
            let client = try await server.connect()
            let (reply, _) = try await client.call(["cmd": "connect", "token": token])
            #expect(reply.ok?["user"] as? String == "ada")
            #expect(reply.ok?["expires_at"] is Int)
            _ = try await client.call(["cmd": "subscribe", "channel": "chat:room"])
            let (presence, _) = try await client.call(["cmd": "presence", "channel": "chat:room"])
            let members = presence.ok?["members"] as? [[String: Any]]
            #expect(members?.first?["user"] as? String == "ada")
            #expect((members?.first?["data"] as? [String: Any])?["name"] as? String == "Ada")
            // A second connect is refused; a publication carries the authenticated user.
            #expect(try await client.call(["cmd": "connect", "token": token]).reply.errorCode == 114)
            _ = try await client.call(["cmd": "publish", "channel": "chat:room", "data": ["t": 1]])
            #expect(try await client.nextPush("pub")["user"] as? String == "ada")
        }
    }

    @Test func bearerHeaderAuthenticatesTheUpgrade() async throws {
        let server = try await server()
        try await finally({ await server.stop() }) {
            let token = try await TestKeys.sign(TestClaims(sub: "bob"), with: await TestKeys.hmac())
            let client = try await server.connect(headers: [("Authorization", "Bearer \(token)")])
            // Connected already: commands run without connect, and a tokenless connect reports who we are.
            #expect(try await client.call(["cmd": "subscribe", "channel": "chat:a"]).reply.ok != nil)
            #expect(try await client.call(["cmd": "connect"]).reply.ok?["user"] as? String == "bob")

            let forged = try await TestKeys.sign(
                TestClaims(sub: "bob"), with: await TestKeys.hmac(TestKeys.otherSecret))
            await #expect {
                _ = try await server.connect(headers: [("Authorization", "Bearer \(forged)")])
            } throws: { error in
                let failure = error as? HandshakeFailure
                return failure?.status == 401 && failure?.body.contains("invalid token: bad signature") == true
            }
        }
    }

    /// Each refused token gets its own error and close reason, and its own metrics label.
    @Test func refusedTokensAreAnsweredWithTheirReasonAndCounted() async throws {
        let metrics = TestMetrics()
        let server = try await server(metrics: metrics)
        try await finally({ await server.stop() }) {
            let keys = await TestKeys.hmac()
            let now = Date().timeIntervalSince1970
            let cases: [(token: String, error: Int, close: UInt16, reason: String, label: String)] = [
                (
                    try await TestKeys.sign(TestClaims(sub: "a", ttl: -10), with: keys), 113, 4001, "token expired",
                    "expired"
                ),
                (
                    try await TestKeys.sign(TestClaims(sub: "a", nbf: now + 300), with: keys), 112, 4003,
                    "invalid token: not yet valid", "not_yet_valid"
                ),
                ("not-a-token", 112, 4003, "invalid token: malformed", "malformed"),
                // RFC 7515 §4.1.11: a critical extension the server does not understand makes the token invalid.
                (
                    try TestKeys.hs256(
                        TestClaims(sub: "a"), header: #"{"alg":"HS256","typ":"JWT","crit":["exp-ext"],"exp-ext":1}"#),
                    112, 4003, "invalid token: unsupported critical header", "unsupported_critical_header"
                ),
                (
                    try TestKeys.unsigned(TestClaims(sub: "a")), 112, 4003, "invalid token: unsigned (alg none)",
                    "alg_none"
                ),
                (
                    try await TestKeys.sign(TestClaims(sub: "a"), with: await TestKeys.hmac(TestKeys.otherSecret)), 112,
                    4003, "invalid token: bad signature", "invalid_signature"
                ),
                (
                    try await TestKeys.sign(TestClaims(sub: "a"), with: await TestKeys.hmac(kid: "k9"), kid: "k9"), 112,
                    4003, "invalid token: unknown key", "unknown_key"
                ),
                (
                    try await TestKeys.sign(TestClaims(sub: nil), with: keys), 112, 4003, "invalid token: no sub claim",
                    "missing_subject"
                ),
                // A `sub` that is there but not a string is a malformed token, not a missing claim.
                (
                    try TestKeys.hs256(["sub": 42, "exp": Int(now) + 300], header: #"{"alg":"HS256","typ":"JWT"}"#),
                    112,
                    4003, "invalid token: malformed", "malformed"
                ),
                (
                    try await TestKeys.sign(TestClaims(sub: ""), with: keys), 112, 4003,
                    "invalid token: anonymous connections are not allowed", "anonymous_not_allowed"
                ),
            ]
            var seen: [String: Int] = [:]
            for refused in cases {
                seen[refused.label, default: 0] += 1
                let client = try await server.connect()
                let (reply, _) = try await client.call(["cmd": "connect", "token": refused.token])
                #expect(reply.errorCode == refused.error, "\(refused.label)")
                let notice = try await client.nextPush("disconnect")
                #expect(notice["reconnect"] as? Bool == (refused.label == "expired"), "\(refused.label)")
                let close = try await client.client.waitForClose()
                #expect(close?.code == refused.close, "\(refused.label)")
                #expect(close?.reason == refused.reason, "\(refused.label)")
                let counted = try metrics.expectCounter("switchboard_auth_failures_total", [("reason", refused.label)])
                #expect(counted.totalValue == Int64(seen[refused.label] ?? 0), "\(refused.label)")
            }
        }
    }

    @Test func anonymousConnectionsAreRefusedThenClosedWhenNotAllowed() async throws {
        let server = try await server(.testDefaults { $0.connectTimeout = .seconds(1) })
        try await finally({ await server.stop() }) {
            let client = try await server.connect()
            #expect(try await client.call(["cmd": "subscribe", "channel": "chat:a"]).reply.errorCode == 111)
            #expect(try await client.call(["cmd": "connect"]).reply.errorCode == 111)
            #expect(try await client.call(["cmd": "ping"]).reply.ok != nil)
            let close = try await client.client.waitForClose()
            #expect(close?.code == 4002)
            #expect(close?.reason == "not authenticated in time")
        }
    }

    @Test func anonymousConnectionsWorkWhereAllowed() async throws {
        let server = try await server(.testDefaults { $0.allowAnonymous = true })
        try await finally({ await server.stop() }) {
            let implicit = try await server.connect()
            #expect(try await implicit.call(["cmd": "subscribe", "channel": "chat:a"]).reply.ok != nil)
            let explicit = try await server.connect()
            let (reply, _) = try await explicit.call(["cmd": "connect"])
            #expect(reply.ok?["user"] is NSNull)
        }
    }

    @Test func refreshBeforeExpiryKeepsTheConnectionAndExpiryClosesIt() async throws {
        let server = try await server(.testDefaults { $0.refreshNotice = .seconds(2) })
        try await finally({ await server.stop() }) {
            let keys = await TestKeys.hmac()
            let refreshed = try await server.connect()
            _ = try await refreshed.call([
                "cmd": "connect", "token": try await TestKeys.sign(TestClaims(sub: "ada", ttl: 3), with: keys),
            ])
            let expiring = try await server.connect()
            _ = try await expiring.call([
                "cmd": "connect", "token": try await TestKeys.sign(TestClaims(sub: "ada", ttl: 3), with: keys),
            ])

            let push = try await refreshed.nextPush("refresh")
            #expect(push["expires_at"] is Int)
            let other = try await TestKeys.sign(TestClaims(sub: "eve", ttl: 60), with: keys)
            #expect(try await refreshed.call(["cmd": "refresh", "token": other]).reply.errorCode == 112)
            let fresh = try await TestKeys.sign(TestClaims(sub: "ada", ttl: 60), with: keys)
            let (reply, _) = try await refreshed.call(["cmd": "refresh", "token": fresh])
            #expect(reply.ok?["expires_at"] is Int)

            _ = try await expiring.nextPush("refresh")
            let notice = try await expiring.nextPush("disconnect")
            #expect(notice["code"] as? Int == 4001)
            #expect(notice["reconnect"] as? Bool == true)
            #expect(try await expiring.client.waitForClose()?.code == 4001)
            // Well past the first token's expiry, the refreshed connection still answers.
            #expect(try await refreshed.call(["cmd": "ping"]).reply.ok != nil)
        }
    }

    /// A token in the upgrade request: the refresh push comes before the expiry, as with `connect`.
    @Test func aBearerHeaderConnectionIsAskedToRefreshThenExpires() async throws {
        let server = try await server(.testDefaults { $0.refreshNotice = .seconds(2) })
        try await finally({ await server.stop() }) {
            let token = try await TestKeys.sign(TestClaims(sub: "ada", ttl: 3), with: await TestKeys.hmac())
            let client = try await server.connect(headers: [("Authorization", "Bearer \(token)")])
            let push = try await client.nextPush("refresh")
            #expect(push["expires_at"] is Int)
            #expect(try await client.nextPush("disconnect")["code"] as? Int == 4001)
            #expect(try await client.client.waitForClose()?.code == 4001)
        }
    }

    @Test func rsaAndECPublicKeysAndRotatedSecretsAreAccepted() async throws {
        let rsa = try await TestKeys.rsa()
        let ec = try await TestKeys.ec(kid: "ec1")
        let newSecret = "the-new-secret-after-rotation-xxxxxxxxxxxxx"
        let server = try await server(
            .testDefaults {
                $0.keys += [.publicKey(pem: rsa.pem), .publicKey(pem: ec.pem, kid: "ec1"), .hmac(secret: newSecret)]
            })
        try await finally({ await server.stop() }) {
            let tokens = [
                ("rsa", try await TestKeys.sign(TestClaims(sub: "rsa"), with: rsa.signer)),
                ("ec", try await TestKeys.sign(TestClaims(sub: "ec"), with: ec.signer, kid: "ec1")),
                ("old", try await TestKeys.sign(TestClaims(sub: "old"), with: await TestKeys.hmac())),
                ("new", try await TestKeys.sign(TestClaims(sub: "new"), with: await TestKeys.hmac(newSecret))),
            ]
            for (user, token) in tokens {
                let client = try await server.connect()
                #expect(try await client.call(["cmd": "connect", "token": token]).reply.ok?["user"] as? String == user)
            }
            // Signed by keys the server does not have: another RSA key (no kid), another EC key under a known kid.
            let otherRSA = try await TestKeys.rsa()
            let otherEC = try await TestKeys.ec(kid: "ec1")
            let forged = [
                try await TestKeys.sign(TestClaims(sub: "rsa"), with: otherRSA.signer),
                try await TestKeys.sign(TestClaims(sub: "ec"), with: otherEC.signer, kid: "ec1"),
            ]
            for token in forged {
                let client = try await server.connect()
                let reply = try await client.call(["cmd": "connect", "token": token]).reply
                #expect((reply["error"] as? [String: Any])?["message"] as? String == "invalid token: bad signature")
            }
        }
    }

    /// Keys from a JWKS served over HTTP: a token with a new `kid` makes the server fetch again (once per
    /// interval, however many tokens ask).
    @Test func jwksIsFetchedAndRefetchedForANewKey() async throws {
        let first = try await TestKeys.ec(kid: "k1")
        let second = try await TestKeys.ec(kid: "k2")
        let third = try await TestKeys.ec(kid: "k3")
        let jwks = try await JWKSServer.start(keys: [first.jwk])
        try await finally({ await jwks.stop() }) {
            let server = try await server(
                .testDefaults {
                    $0.keys = []
                    $0.jwksURL = jwks.url
                })
            try await finally({ await server.stop() }) {
                #expect(jwks.fetches == 1)
                let client = try await server.connect()
                let token = try await TestKeys.sign(TestClaims(sub: "k1user"), with: first.signer, kid: "k1")
                #expect(
                    try await client.call(["cmd": "connect", "token": token]).reply.ok?["user"] as? String == "k1user")

                jwks.setKeys([first.jwk, second.jwk])
                let rotated = try await server.connect()
                let newToken = try await TestKeys.sign(TestClaims(sub: "k2user"), with: second.signer, kid: "k2")
                #expect(
                    try await rotated.call(["cmd": "connect", "token": newToken]).reply.ok?["user"] as? String
                        == "k2user")
                #expect(jwks.fetches == 2)

                jwks.setKeys([first.jwk, second.jwk, third.jwk])
                let tooSoon = try await server.connect()
                let thirdToken = try await TestKeys.sign(TestClaims(sub: "k3user"), with: third.signer, kid: "k3")
                #expect(try await tooSoon.call(["cmd": "connect", "token": thirdToken]).reply.errorCode == 112)
                #expect(jwks.fetches == 2)
            }
        }
    }

    /// The token's `channels` are subscribed at connect, with recovery from the positions `connect` names.
    @Test func tokenChannelsAreSubscribedAndRecovered() async throws {
        let server = try await server()
        try await finally({ await server.stop() }) {
            let loop = MultiThreadedEventLoopGroup.singleton.next()
            let first = try await server.application.publish(channel: "chat:news", data: "1", on: loop).get()
            _ = try await server.application.publish(channel: "chat:news", data: "2", on: loop).get()
            let history = try await server.application.publish(channel: "chat:news", data: "3", on: loop).get()
            let token = try await TestKeys.sign(
                TestClaims(sub: "ada", channels: ["chat:news"]), with: await TestKeys.hmac())
            let client = try await server.connect()
            let recover: [String: Any] = [
                "chat:news": ["offset": first.offset, "epoch": try await epoch(server, "chat:news")]
            ]
            _ = try await client.call(["cmd": "connect", "token": token, "recover": recover])
            let subscribed = try await client.nextPush("subscribed")
            #expect(subscribed["channel"] as? String == "chat:news")
            #expect(subscribed["recovered"] as? Bool == true)
            #expect((subscribed["publications"] as? [[String: Any]])?.compactMap { $0["offset"] as? Int } == [2, 3])
            #expect(subscribed["offset"] as? Int == history.offset)
            _ = try await server.application.publish(channel: "chat:news", data: "4", on: loop).get()
            #expect(try await client.nextPush("pub")["offset"] as? Int == 4)
        }
    }

    private func epoch(_ server: ChannelsServer, _ channel: String) async throws -> String {
        let reader = try await server.connect(headers: [
            (
                "Authorization",
                "Bearer \(try await TestKeys.sign(TestClaims(sub: "reader"), with: await TestKeys.hmac()))"
            )
        ])
        return try await reader.call(["cmd": "history", "channel": channel]).reply.ok?["epoch"] as? String ?? ""
    }
}

@Suite("Authentication: configuration", .timeLimit(.minutes(5)))
struct AuthConfigurationTests {
    @Test func loopbackIsDecidedByAddress() {
        for host in ["127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost", "LOCALHOST", "::ffff:127.0.0.1"] {
            #expect(isLoopbackHost(host), "\(host)")
        }
        for host in ["127.attacker.example", "127.+0.0.1", "127.0.0.1]", "0.0.0.0", "10.0.0.1", "example.com", "::"] {
            #expect(!isLoopbackHost(host), "\(host)")
        }
    }

    @Test func aJWKSKeyWithoutKidServesTokensWithoutOne() async throws {
        let ec = try await TestKeys.ec(kid: "ignored")
        let unnamed = ec.jwk.replacingOccurrences(of: #""kid":"ignored","#, with: "")
        #expect(!unnamed.contains("kid"))
        let verifier = try await TokenVerifier.make(
            .testDefaults { $0.keys = [.jwks(json: "{\"keys\":[\(unnamed)]}")] })
        let token = try await TestKeys.sign(TestClaims(sub: "ada"), with: await TestKeys.ec(kid: "x").signer)
        // Another key: refused; the set's own key, signing without kid: accepted.
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        await #expect(throws: TokenFailure.invalidSignature) { try await verifier.verify(token, on: loop).get() }
        let signer = await JWTKeyCollection().add(ecdsa: try ES256PrivateKey(backing: ec.key))
        let own = try await signer.sign(TestClaims(sub: "ada"))
        #expect(try await verifier.verify(own, on: loop).get().subject == "ada")
    }

    @Test func aJWKSWithoutAUsableKeyIsAnError() async throws {
        await #expect(throws: TokenKeyError.self) {
            _ = try await TokenVerifier.make(.testDefaults { $0.keys = [.jwks(json: #"{"keys":[]}"#)] })
        }
    }
}
