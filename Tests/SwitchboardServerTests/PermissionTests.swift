import Foundation
import SwitchboardClient
import SwitchboardServer
import SwitchboardTestSupport
import Testing

/// Namespace permissions, subscription tokens and user-limited channels, over real sockets. Refusals are
/// error replies; the connection stays.
@Suite("Channel permissions", .serialized, .timeLimit(.minutes(5)))
struct PermissionTests {
    private func server() async throws -> ChannelsServer {
        let verifier = try await TokenVerifier.make(.testDefaults { $0.allowAnonymous = true })
        return try await ChannelsServer.start(
            verifier: verifier,
            channels: { channels in
                var members = NamespaceOptions()
                members.permissions.subscribe = .authenticated
                members.permissions.publish = .authenticated
                channels.namespaces["members"] = members
                var club = NamespaceOptions()
                club.historySize = 10
                club.presence = true
                club.permissions.publish = .subscribers
                club.permissions.presence = .subscribers
                club.permissions.history = .subscribers
                channels.namespaces["club"] = club
                var secret = NamespaceOptions()
                secret.permissions.subscribe = .token
                channels.namespaces["private"] = secret
                channels.namespaces["dm"] = NamespaceOptions()
            })
    }

    private func user(_ name: String, on server: ChannelsServer) async throws -> ProtocolClient {
        let client = try await server.connect()
        let token = try await TestKeys.sign(TestClaims(sub: name), with: await TestKeys.hmac())
        #expect(try await client.call(["cmd": "connect", "token": token]).reply.ok?["user"] as? String == name)
        return client
    }

    @Test func authenticatedOnlyRefusesAnonymousConnections() async throws {
        let server = try await server()
        try await finally({ await server.stop() }) {
            let anonymous = try await server.connect()
            let refused = try await anonymous.call(["cmd": "subscribe", "channel": "members:a"]).reply
            #expect(refused.errorCode == 104)
            #expect(
                try await anonymous.call(["cmd": "publish", "channel": "members:a", "data": 1]).reply.errorCode == 104)
            // Still connected: other namespaces work.
            #expect(try await anonymous.call(["cmd": "subscribe", "channel": "chat:a"]).reply.ok != nil)
            let ada = try await user("ada", on: server)
            #expect(try await ada.call(["cmd": "subscribe", "channel": "members:a"]).reply.ok != nil)
        }
    }

    @Test func subscribersOnlyGatesPublishPresenceAndHistory() async throws {
        let server = try await server()
        try await finally({ await server.stop() }) {
            let ada = try await user("ada", on: server)
            for command in [
                ["cmd": "publish", "channel": "club:x", "data": 1], ["cmd": "presence", "channel": "club:x"],
                ["cmd": "history", "channel": "club:x"],
            ] as [[String: Any]] {
                #expect(try await ada.call(command).reply.errorCode == 104, "\(command)")
            }
            _ = try await ada.call(["cmd": "subscribe", "channel": "club:x"])
            #expect(try await ada.call(["cmd": "publish", "channel": "club:x", "data": 1]).reply.ok != nil)
            #expect(try await ada.call(["cmd": "presence", "channel": "club:x"]).reply.ok != nil)
            #expect(try await ada.call(["cmd": "history", "channel": "club:x"]).reply.ok != nil)
        }
    }

    @Test func subscriptionTokensOpenPrivateChannels() async throws {
        let server = try await server()
        try await finally({ await server.stop() }) {
            let keys = await TestKeys.hmac()
            let ada = try await user("ada", on: server)
            #expect(try await ada.call(["cmd": "subscribe", "channel": "private:plans"]).reply.errorCode == 104)
            let forOther = try await TestKeys.sign(TestClaims(sub: "ada", channel: "private:other"), with: keys)
            let wrongChannel = try await ada.call(["cmd": "subscribe", "channel": "private:plans", "token": forOther])
                .reply
            #expect(wrongChannel.errorCode == 112)
            #expect(
                (wrongChannel["error"] as? [String: Any])?["message"] as? String == "invalid token: for another channel"
            )
            let forBob = try await TestKeys.sign(TestClaims(sub: "bob", channel: "private:plans"), with: keys)
            #expect(
                try await ada.call(["cmd": "subscribe", "channel": "private:plans", "token": forBob]).reply.errorCode
                    == 112
            )
            let expired = try await TestKeys.sign(TestClaims(sub: "ada", ttl: -5, channel: "private:plans"), with: keys)
            #expect(
                try await ada.call(["cmd": "subscribe", "channel": "private:plans", "token": expired]).reply.errorCode
                    == 113)
            let valid = try await TestKeys.sign(TestClaims(sub: "ada", channel: "private:plans"), with: keys)
            let accepted = try await ada.call(["cmd": "subscribe", "channel": "private:plans", "token": valid]).reply
            #expect(accepted.ok?["offset"] is Int)
        }
    }

    @Test func userLimitedChannelsAdmitOnlyTheirUsers() async throws {
        let server = try await server()
        try await finally({ await server.stop() }) {
            let ada = try await user("ada", on: server)
            let carol = try await user("carol", on: server)
            let anonymous = try await server.connect()
            #expect(try await ada.call(["cmd": "subscribe", "channel": "dm:#ada,bob"]).reply.ok != nil)
            let refused = try await carol.call(["cmd": "subscribe", "channel": "dm:#ada,bob"]).reply
            #expect(
                (refused["error"] as? [String: Any])?["message"] as? String
                    == "not allowed: not one of this channel's users")
            #expect(
                try await carol.call(["cmd": "publish", "channel": "dm:#ada,bob", "data": 1]).reply.errorCode == 104)
            #expect(try await anonymous.call(["cmd": "subscribe", "channel": "dm:#ada,bob"]).reply.errorCode == 104)
            _ = try await ada.call(["cmd": "publish", "channel": "dm:#ada,bob", "data": ["hi": "bob"]])
            #expect(try await ada.nextPush("pub")["channel"] as? String == "dm:#ada,bob")
        }
    }

    @Test func configurationFileReadsPermissions() throws {
        let json = #"{"namespaces": {"p": {"permissions": {"subscribe": "token", "history": "subscribers"}}}}"#
        let configuration = try ChannelsConfiguration(json: Data(json.utf8))
        #expect(configuration.namespaces["p"]?.permissions.subscribe == .token)
        #expect(configuration.namespaces["p"]?.permissions.history == .subscribers)
        #expect(configuration.namespaces["p"]?.permissions.publish == .anyone)
        let wrong = #"{"namespaces": {"p": {"permissions": {"subscribe": "subscribers"}}}}"#
        #expect {
            try ChannelsConfiguration(json: Data(wrong.utf8))
        } throws: { error in
            "\(error)"
                == #"namespaces.p.permissions.subscribe: must be "anyone", "authenticated", "token", "localOrAuthenticated""#
        }
        let typo = #"{"namespaces": {"p": {"permissions": {"subscirbe": "token"}}}}"#
        #expect(throws: ConfigurationError.self) { try ChannelsConfiguration(json: Data(typo.utf8)) }
    }

    /// Behind a reverse proxy on the same host every client connects from loopback. A forwarded request is
    /// not local: `sys:` (local or authenticated) is refused to it, trusted proxy or not.
    @Test func aForwardedLoopbackConnectionIsNotLocal() async throws {
        let server = try await ChannelsServer.start(authenticate: { _ in .accept(userID: nil, subprotocol: nil) })
        try await finally({ await server.stop() }) {
            let local = try await server.connect()
            #expect(try await local.call(["cmd": "subscribe", "channel": "sys:stats"]).reply.ok != nil)
            for header in [("X-Forwarded-For", "203.0.113.9"), ("Forwarded", "for=203.0.113.9")] {
                let proxied = try await server.connect(headers: [header])
                #expect(
                    try await proxied.call(["cmd": "subscribe", "channel": "sys:stats"]).reply.errorCode == 104,
                    "\(header.0)")
            }
        }
    }

    /// Demo mode names users from `?user=`: only for clients on this host, never through a proxy.
    @Test func demoModeRefusesForwardedRequests() async throws {
        let server = try await ChannelsServer.start(authenticate: ChannelsApplication.userFromQuery)
        try await finally({ await server.stop() }) {
            let ada = try await server.connect(user: "ada")
            let reply = try await ada.call(["cmd": "subscribe", "channel": "chat:a"]).reply
            #expect(reply.ok != nil)
            do {
                let proxied = try await server.connect(user: "mallory", headers: [("X-Forwarded-For", "203.0.113.9")])
                await proxied.client.disconnect()
                Issue.record("a forwarded request named its user in demo mode")
            } catch let failure as HandshakeFailure {
                #expect(failure.status == 403)
                #expect(failure.body.contains("demo mode"))
            }
        }
    }
}
