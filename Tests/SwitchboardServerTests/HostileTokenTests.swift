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

/// What an attacker or a careless backend might try.
@Suite("Authentication: hostile tokens", .serialized, .timeLimit(.minutes(5)))
struct HostileTokenTests {
    private func server(_ auth: AuthConfiguration) async throws -> ChannelsServer {
        try await ChannelsServer.start(verifier: try await TokenVerifier.make(auth))
    }

    private func refusal(_ server: ChannelsServer, _ token: String) async throws -> String? {
        let client = try await server.connect()
        let reply = try await client.call(["cmd": "connect", "token": token]).reply
        return (reply["error"] as? [String: Any])?["message"] as? String ?? (reply.ok?["user"] as? String)
    }

    /// The classic algorithm confusion: an HS256 token "signed" with the server's RSA public key as the secret.
    @Test func anRSAPublicKeyIsNeverUsedAsAnHMACSecret() async throws {
        let rsa = try await TestKeys.rsa()
        let server = try await server(.testDefaults { $0.keys = [.publicKey(pem: rsa.pem)] })
        try await finally({ await server.stop() }) {
            let forged = try await TestKeys.sign(TestClaims(sub: "admin"), with: await TestKeys.hmac(rsa.pem))
            #expect(try await refusal(server, forged) == "invalid token: unknown key")
            let genuine = try await TestKeys.sign(TestClaims(sub: "ada"), with: rsa.signer)
            #expect(try await refusal(server, genuine) == "ada")
        }
    }

    @Test func audienceIssuerAndLeewayAreChecked() async throws {
        let server = try await server(
            .testDefaults {
                $0.rules.audience = "switchboard"
                $0.rules.issuer = "https://auth.example"
                $0.rules.leeway = 30
            })
        let keys = await TestKeys.hmac()
        func token(aud: String?, iss: String?, ttl: Double = 60) async throws -> String {
            try await TestKeys.sign(TestClaims(sub: "ada", ttl: ttl, aud: aud, iss: iss), with: keys)
        }
        try await finally({ await server.stop() }) { () async throws in
            #expect(
                try await refusal(server, try await token(aud: "switchboard", iss: "https://auth.example")) == "ada")
            #expect(
                try await refusal(server, try await token(aud: "other", iss: "https://auth.example"))
                    == "invalid token: wrong audience")
            #expect(
                try await refusal(server, try await token(aud: "switchboard", iss: "https://evil.example"))
                    == "invalid token: wrong issuer")
            // Expired 10 s ago, inside the 30 s leeway: accepted; 60 s ago: refused.
            #expect(
                try await refusal(server, try await token(aud: "switchboard", iss: "https://auth.example", ttl: -10))
                    == "ada")
            #expect(
                try await refusal(server, try await token(aud: "switchboard", iss: "https://auth.example", ttl: -60))
                    == "token expired")
        }
    }

    @Test func aSubscriptionTokenDoesNotAuthenticate() async throws {
        let server = try await server(.testDefaults())
        try await finally({ await server.stop() }) {
            let token = try await TestKeys.sign(
                TestClaims(sub: "ada", channel: "private:x"), with: await TestKeys.hmac())
            #expect(try await refusal(server, token) == "invalid token: a subscription token cannot connect")
            await #expect {
                _ = try await server.connect(headers: [("Authorization", "Bearer \(token)")])
            } throws: { ($0 as? HandshakeFailure)?.status == 401 }
        }
    }

    /// An `exp` far beyond any real date must not overflow anything.
    @Test func aHugeExpiryIsHarmless() async throws {
        let server = try await server(.testDefaults())
        try await finally({ await server.stop() }) {
            let token = try await TestKeys.sign(TestClaims(sub: "ada", exp: 1e300), with: await TestKeys.hmac())
            let client = try await server.connect()
            let reply = try await client.call(["cmd": "connect", "token": token]).reply
            #expect(reply.ok?["user"] as? String == "ada")
            #expect(try await client.call(["cmd": "ping"]).reply.ok != nil)
        }
    }

    @Test func commandsSentBehindConnectRunAfterIt() async throws {
        let server = try await server(.testDefaults())
        try await finally({ await server.stop() }) {
            let token = try await TestKeys.sign(TestClaims(sub: "ada"), with: await TestKeys.hmac())
            let client = try await server.connect()
            let connect = client.send(["cmd": "connect", "token": token])
            let subscribe = client.send(["cmd": "subscribe", "channel": "chat:a"])
            let first = try await client.next()
            #expect(first.id == connect)
            #expect(first.ok?["user"] as? String == "ada")
            let second = try await client.next()
            #expect(second.id == subscribe)
            #expect(second.ok != nil)
        }
    }

    @Test func aConnectionSendingGarbageTokensIsClosed() async throws {
        let server = try await server(.testDefaults())
        try await finally({ await server.stop() }) {
            let token = try await TestKeys.sign(TestClaims(sub: "ada"), with: await TestKeys.hmac())
            let client = try await server.connect()
            _ = try await client.call(["cmd": "connect", "token": token])
            // Expired tokens are an honest client's mistake: they do not count toward the limit.
            let expired = try await TestKeys.sign(TestClaims(sub: "ada", ttl: -5), with: await TestKeys.hmac())
            for _ in 0..<10 {
                #expect(try await client.call(["cmd": "refresh", "token": expired]).reply.errorCode == 113)
            }
            for _ in 0..<7 {
                #expect(try await client.call(["cmd": "refresh", "token": "garbage"]).reply.errorCode == 112)
            }
            client.send(["cmd": "refresh", "token": "garbage"])
            let close = try await client.client.waitForClose()
            #expect(close?.code == 4003)
            #expect(close?.reason == "invalid token: too many refused tokens")
        }
    }

    @Test func aJWKSWithKeysItCannotUseStillServesTheOthers() async throws {
        let ec = try await TestKeys.ec(kid: "good")
        let unusable = [
            #"{"kty":"oct","kid":"sym","k":"c2VjcmV0"}"#,
            #"{"kty":"EC","crv":"P-256","kid":"enc","use":"enc","x":"AA","y":"AA"}"#,
            #"{"kty":"OKP","crv":"X25519","kid":"x","x":"AA"}"#,
        ]
        let server = try await server(
            .testDefaults { $0.keys = [.jwks(json: "{\"keys\":[\(unusable.joined(separator: ",")),\(ec.jwk)]}")] })
        try await finally({ await server.stop() }) {
            let token = try await TestKeys.sign(TestClaims(sub: "ada"), with: ec.signer, kid: "good")
            #expect(try await refusal(server, token) == "ada")
        }
    }

    @Test func aJWKSOverPlainHTTPIsRefusedUnlessLocal() async throws {
        await #expect(throws: TokenKeyError.self) {
            _ = try await TokenVerifier.make(.testDefaults { $0.jwksURL = "http://keys.example/jwks" })
        }
    }
}
