import Foundation
import MetricsTestKit
import NIOConcurrencyHelpers
import NIOCore
import SwitchboardClient
import SwitchboardCore
import SwitchboardServer
import SwitchboardTestSupport
import Testing

/// The event proxy against a real HTTP backend on loopback: connect by cookie, subscribe and publish
/// decided (and rewritten) by the backend, RPC, expiry renewed by the refresh proxy, and a backend that is
/// down, slow or answering garbage.
@Suite("Event proxy", .serialized, .timeLimit(.minutes(5)))
struct ProxyTests {
    /// `secret` asks the backend about subscribes, `moderated` about publishes (both keep history and presence).
    static func namespaces(_ channels: inout ChannelsConfiguration) {
        var secret = NamespaceOptions()
        secret.proxySubscribe = true
        secret.presence = true
        channels.namespaces["secret"] = secret
        var moderated = NamespaceOptions()
        moderated.proxyPublish = true
        moderated.historySize = 10
        channels.namespaces["moderated"] = moderated
    }

    @Test func aCookieAuthenticatesTheConnectionWithServerSideChannels() async throws {
        let backend = try await ProxyBackend.start { request in
            guard request.headers["cookie"] == "session=s3cret" else {
                return .init(body: #"{"error":{"code":1401,"message":"no session"}}"#)
            }
            return .init(
                body:
                    #"{"result":{"user":"alice","info":{"role":"admin"},"data":{"theme": "dark"},"channels":["chat:alice"],"expire_at":null}}"#
            )
        }
        let server = try await ChannelsServer.start(
            channels: Self.namespaces, proxy: backend.configuration(forwarding: ["Cookie"], connect: true))
        try await finally(
            {
                await server.stop()
                await backend.stop()
            }
        ) {
            let alice = try await server.connect(headers: [("Cookie", "session=s3cret"), ("X-Other", "kept here")])
            let subscribed = try await alice.nextPush("subscribed")
            #expect(subscribed["channel"] as? String == "chat:alice")
            let (reply, _) = try await alice.call(["cmd": "connect"])
            #expect(reply.ok?["user"] as? String == "alice")
            #expect((reply.ok?["data"] as? [String: Any])?["theme"] as? String == "dark")
            let presence = try await alice.call(["cmd": "presence", "channel": "chat:alice"]).reply
            let member = (presence.ok?["members"] as? [[String: Any]])?.first
            #expect((member?["data"] as? [String: Any])?["role"] as? String == "admin")

            let request = try #require(backend.requests("connect").first)
            #expect(request.json["transport"] as? String == "websocket")
            #expect(request.headers["cookie"] == "session=s3cret")
            #expect(request.headers["x-other"] == nil, "only the configured headers are forwarded")

            // No cookie: the backend's error is the upgrade's 403, with its message.
            await #expect {
                _ = try await server.connect()
            } throws: { error in
                let failure = error as? HandshakeFailure
                return failure?.status == 403 && failure?.body.contains("no session") == true
            }
        }
    }

    @Test func theBackendRefusesASubscribeOrGivesItPresenceInfo() async throws {
        let backend = try await ProxyBackend.start { request in
            guard request.json["channel"] as? String == "secret:open" else {
                return .init(body: #"{"error":{"code":1403,"message":"not yours"}}"#)
            }
            return .init(body: #"{"result":{"info":{"badge":"gold"}}}"#)
        }
        let server = try await ChannelsServer.start(channels: Self.namespaces, proxy: backend.configuration())
        try await finally(
            {
                await server.stop()
                await backend.stop()
            }
        ) {
            let client = try await server.connect(user: "bob")
            let refused = try await client.call(["cmd": "subscribe", "channel": "secret:closed"]).reply
            #expect(refused.errorCode == 1403)
            #expect((refused["error"] as? [String: Any])?["message"] as? String == "not yours")
            let granted = try await client.call(["cmd": "subscribe", "channel": "secret:open", "data": ["why": 1]])
            #expect(granted.reply.ok != nil)
            let presence = try await client.call(["cmd": "presence", "channel": "secret:open"]).reply
            let member = (presence.ok?["members"] as? [[String: Any]])?.first
            #expect((member?["data"] as? [String: Any])?["badge"] as? String == "gold")

            let asked = try #require(backend.requests("subscribe").last)
            #expect(asked.json["user"] as? String == "bob")
            #expect(asked.json["channel"] as? String == "secret:open")
            #expect(asked.body.contains(#""data":{"why":1}"#))
            #expect((asked.json["client"] as? String)?.isEmpty == false)
            // Namespaces without proxySubscribe never ask.
            _ = try await client.call(["cmd": "subscribe", "channel": "chat:plain"])
            #expect(backend.requests("subscribe").count == 2)
        }
    }

    @Test func theBackendRewritesOrRefusesAPublishAndMaySkipHistory() async throws {
        let backend = try await ProxyBackend.start { request in
            if request.body.contains("spam") {
                return .init(body: #"{"error":{"code":1002,"message":"no spam"}}"#)
            }
            if request.body.contains("ephemeral") {
                return .init(body: #"{"result":{"skip_history":true}}"#)
            }
            return .init(body: #"{"result":{"data":{"text": "HELLO",  "checked" :true}}}"#)
        }
        let server = try await ChannelsServer.start(channels: Self.namespaces, proxy: backend.configuration())
        try await finally(
            {
                await server.stop()
                await backend.stop()
            }
        ) {
            let reader = try await server.connect(user: "reader")
            let epoch = try await reader.call(["cmd": "subscribe", "channel": "moderated:room"]).reply.ok?["epoch"]
            let writer = try await server.connect(user: "writer")
            // The client's bytes reach the backend exactly; the backend's bytes reach subscribers exactly.
            writer.client.send(
                text: #"{"id":1,"cmd":"publish","channel":"moderated:room","data":{"text" : "hello" , "n":1.50}}"#)
            #expect(try await writer.next().ok?["offset"] as? Int == 1)
            #expect(backend.requests("publish").first?.body.contains(#""data":{"text" : "hello" , "n":1.50}"#) == true)
            guard case .text(let pushed) = try await reader.client.nextMessage() else {
                throw ConditionFailure("expected the publication")
            }
            #expect(pushed.contains(#""data":{"text": "HELLO",  "checked" :true}"#))

            let refused = try await writer.call(["cmd": "publish", "channel": "moderated:room", "data": "spam"]).reply
            #expect(refused.errorCode == 1002)
            let ephemeral = try await writer.call([
                "cmd": "publish", "channel": "moderated:room", "data": "ephemeral",
            ]).reply
            #expect(ephemeral.ok?["offset"] as? Int == 2)
            let history = try await writer.call(["cmd": "history", "channel": "moderated:room"]).reply
            let kept = (history.ok?["publications"] as? [[String: Any]])?.compactMap { $0["offset"] as? Int }
            #expect(kept == [1], "skip_history keeps it out of history")
            // Recovering across it is not complete: the client missed something history cannot give back.
            let late = try await server.connect(user: "late")
            let across = try await late.call([
                "cmd": "subscribe", "channel": "moderated:room", "recover": ["offset": 1, "epoch": epoch ?? ""],
            ]).reply
            #expect(across.ok?["recovered"] as? Bool == false)
            _ = try await late.call(["cmd": "unsubscribe", "channel": "moderated:room"])
            let after = try await late.call([
                "cmd": "subscribe", "channel": "moderated:room", "recover": ["offset": 2, "epoch": epoch ?? ""],
            ]).reply
            #expect(after.ok?["recovered"] as? Bool == true)
        }
    }

    /// The backend answers a connection's two publishes out of order (the first one late): they are still
    /// made in the order sent. Without the ordering, "second" got offset 1.
    @Test func publishesAreMadeInTheOrderSentWhateverOrderTheBackendAnswersIn() async throws {
        let backend = try await ProxyBackend.start { request in
            .init(body: #"{"result":{}}"#, delay: request.body.contains("first") ? .milliseconds(400) : .zero)
        }
        let server = try await ChannelsServer.start(channels: Self.namespaces, proxy: backend.configuration())
        try await finally(
            {
                await server.stop()
                await backend.stop()
            }
        ) {
            let reader = try await server.connect(user: "reader")
            _ = try await reader.call(["cmd": "subscribe", "channel": "moderated:order"])
            let writer = try await server.connect(user: "writer")
            let first = writer.send(["cmd": "publish", "channel": "moderated:order", "data": "first"])
            let second = writer.send(["cmd": "publish", "channel": "moderated:order", "data": "second"])
            var offsets: [Int: Int] = [:]
            while offsets.count < 2 {
                let reply = try await writer.next()
                if let id = reply.id { offsets[id] = reply.ok?["offset"] as? Int }
            }
            #expect(offsets[first] == 1)
            #expect(offsets[second] == 2)
            let pushes = [try await reader.nextPush("pub"), try await reader.nextPush("pub")]
            #expect(pushes.map { $0["data"] as? String } == ["first", "second"])
        }
    }

    @Test func anRPCIsAnsweredByTheBackend() async throws {
        let backend = try await ProxyBackend.start { request in
            let method = request.json["method"] as? String ?? ""
            guard method == "echo" else { return .init(body: #"{"error":{"code":1404,"message":"no such method"}}"#) }
            let data = request.body.range(of: #""data":"#).map { String(request.body[$0.upperBound...].dropLast()) }
            return .init(body: #"{"result":{"data":{"echo":"# + (data ?? "null") + "}}}")
        }
        let server = try await ChannelsServer.start(channels: Self.namespaces, proxy: backend.configuration())
        try await finally(
            {
                await server.stop()
                await backend.stop()
            }
        ) {
            let client = try await server.connect(user: "carol")
            client.client.send(text: #"{"id":7,"cmd":"rpc","method":"echo","data":[1, {"x" :true}]}"#)
            guard case .text(let reply) = try await client.client.nextMessage() else {
                throw ConditionFailure("expected the reply")
            }
            #expect(reply == #"{"id":7,"ok":{"data":{"echo":[1, {"x" :true}]}}}"#)
            #expect(try await client.call(["cmd": "rpc", "method": "nope"]).reply.errorCode == 1404)
            #expect(try await client.call(["cmd": "rpc"]).reply.errorCode == 100)
            #expect(backend.requests("rpc").first?.json["user"] as? String == "carol")
        }

        // No RPC backend configured: 104.
        let plain = try await ChannelsServer.start()
        try await finally({ await plain.stop() }) {
            let client = try await plain.connect(user: "dan")
            #expect(try await client.call(["cmd": "rpc", "method": "echo"]).reply.errorCode == 104)
        }
    }

    /// Down (nothing listens), slow past the timeout, 5xx, garbage: each a clear error within the timeout,
    /// counted, and other connections go on meanwhile.
    @Test func aBackendDownSlowOrAnsweringGarbageGetsAClearErrorInTime() async throws {
        let backend = try await ProxyBackend.start { request in
            switch request.json["method"] as? String {
            case "slow": .init(body: #"{"result":{}}"#, delay: .seconds(5))
            case "fail": .init(status: .internalServerError, body: "oops")
            case "garbage": .init(body: "<html>not json</html>")
            case "two": .init(body: #"{"result":{},"error":{"code":1000,"message":"x"}}"#)
            case "lowcode": .init(body: #"{"error":{"code":104,"message":"x"}}"#)
            case "badclose": .init(body: #"{"disconnect":{"code":1000,"reason":"x"}}"#)
            case "close": .init(body: #"{"disconnect":{"code":4501,"reason":"banned"}}"#)
            default: .init(body: #"{"result":{}}"#)
            }
        }
        let metrics = TestMetrics()
        let server = try await ChannelsServer.start(
            metrics: metrics, channels: Self.namespaces, proxy: backend.configuration(timeout: .milliseconds(500)))
        try await finally(
            {
                await server.stop()
                await backend.stop()
            }
        ) {
            let client = try await server.connect(user: "erin")
            let bystander = try await server.connect(user: "frank")

            let clock = ContinuousClock()
            let started = clock.now
            let slowID = client.send(["cmd": "rpc", "method": "slow"])
            // While the backend sits on that request, other connections are answered at once.
            #expect(try await bystander.call(["cmd": "ping"]).reply.ok != nil)
            let slow = try await client.next()
            #expect(slow.id == slowID)
            #expect(slow.errorCode == 110)
            #expect(clock.now - started < .seconds(3), "the timeout (0.5 s) bounds the wait")

            #expect(try await client.call(["cmd": "rpc", "method": "fail"]).reply.errorCode == 110)
            #expect(try await client.call(["cmd": "rpc", "method": "garbage"]).reply.errorCode == 118)
            #expect(try await client.call(["cmd": "rpc", "method": "two"]).reply.errorCode == 118)
            #expect(try await client.call(["cmd": "rpc", "method": "lowcode"]).reply.errorCode == 118)
            #expect(try await client.call(["cmd": "rpc", "method": "badclose"]).reply.errorCode == 118)

            for (outcome, count) in [("timeout", 1), ("unavailable", 1), ("invalid", 4)] {
                let counter = try metrics.expectCounter(
                    "switchboard_proxy_requests_total", [("event", "rpc"), ("outcome", outcome)])
                #expect(counter.totalValue == Int64(count), "\(outcome)")
            }

            // The backend's disconnect closes the connection with its code; 45xx advises not reconnecting.
            client.send(["cmd": "rpc", "method": "close"])
            let notice = try await client.nextPush("disconnect")
            #expect(notice["code"] as? Int == 4501)
            #expect(notice["reconnect"] as? Bool == false)
            #expect(try await client.client.waitForClose()?.code == 4501)
            #expect(try await bystander.call(["cmd": "ping"]).reply.ok != nil)
        }

        // Nothing listens at the backend's address: 110 for commands, 503 for the upgrade.
        let port = backend.port
        var gone = ProxyConfiguration(
            connectURL: "http://127.0.0.1:\(port)/connect", rpcURL: "http://127.0.0.1:\(port)/rpc",
            timeout: .seconds(2))
        let down = try await ChannelsServer.start(proxy: gone)
        try await finally({ await down.stop() }) {
            await #expect {
                _ = try await down.connect()
            } throws: { ($0 as? HandshakeFailure)?.status == 503 }
        }
        gone.connectURL = nil
        let downRPC = try await ChannelsServer.start(proxy: gone)
        try await finally({ await downRPC.stop() }) {
            let client = try await downRPC.connect(user: "gil")
            let reply = try await client.call(["cmd": "rpc", "method": "echo"]).reply
            #expect(reply.errorCode == 110)
        }
    }

    /// Where anonymous connections are refused (token keys, allowAnonymous false), the backend's "" user is too.
    @Test func anAnonymousGrantIsRefusedWhereAnonymousIsNot() async throws {
        let backend = try await ProxyBackend.start { request in
            let user = request.headers["authorization"] == "Session named" ? "nia" : ""
            return .init(body: #"{"result":{"user":"\#(user)"}}"#)
        }
        let verifier = try await TokenVerifier.make(.testDefaults { $0.allowAnonymous = false })
        let server = try await ChannelsServer.start(
            verifier: verifier, proxy: backend.configuration(forwarding: ["Authorization"], connect: true))
        try await finally(
            {
                await server.stop()
                await backend.stop()
            }
        ) {
            let named = try await server.connect(headers: [("Authorization", "Session named")])
            #expect(try await named.call(["cmd": "connect"]).reply.ok?["user"] as? String == "nia")
            await #expect {
                _ = try await server.connect(headers: [("Authorization", "Session none")])
            } throws: { ($0 as? HandshakeFailure)?.status == 403 }
        }
    }

    /// A user that is not a string, or an expire_at already past (the client would be closed at once and
    /// reconnect into the backend in a loop): 502.
    @Test func theConnectProxyAnsweringGarbageIs502() async throws {
        let backend = try await ProxyBackend.start { request in
            guard request.headers["x-case"] == "past" else { return .init(body: #"{"result":{"user":42}}"#) }
            return .init(body: #"{"result":{"user":"old","expire_at":\#(Int(Date().timeIntervalSince1970) - 10)}}"#)
        }
        let server = try await ChannelsServer.start(
            proxy: backend.configuration(forwarding: ["X-Case"], connect: true))
        try await finally(
            {
                await server.stop()
                await backend.stop()
            }
        ) {
            await #expect {
                _ = try await server.connect()
            } throws: { ($0 as? HandshakeFailure)?.status == 502 }
            await #expect {
                _ = try await server.connect(headers: [("X-Case", "past")])
            } throws: { ($0 as? HandshakeFailure)?.status == 502 }
        }
    }

    /// `expire_at` from the connect proxy: the refresh proxy is asked before it and extends it (after a
    /// failed first answer, asked again half-way); where the backend's answer is unusable, the connection
    /// closes at its expiry (4001, reconnect advised).
    @Test func theRefreshProxyRenewsAConnectionBeforeItExpires() async throws {
        let longAsked = NIOLockedValueBox(0)
        let backend = try await ProxyBackend.start { request in
            let now = Date().timeIntervalSince1970
            switch request.event {
            case "connect":
                let user = request.headers["authorization"] == "Session long" ? "long" : "short"
                return .init(body: #"{"result":{"user":"\#(user)","expire_at":\#(Int(now) + 3)}}"#)
            default:
                guard request.json["user"] as? String == "long" else {
                    // An answer without expire_at is unusable (it must not lift the expiry by omission).
                    return .init(body: #"{"result":{}}"#)
                }
                let asked = longAsked.withLockedValue {
                    $0 += 1
                    return $0
                }
                if asked == 1 { return .init(status: .internalServerError, body: "") }
                return .init(body: #"{"result":{"expire_at":\#(Int(now) + 3600)}}"#)
            }
        }
        let server = try await ChannelsServer.start(
            proxy: backend.configuration(forwarding: ["Authorization"], connect: true, refresh: true))
        try await finally(
            {
                await server.stop()
                await backend.stop()
            }
        ) {
            let long = try await server.connect(headers: [("Authorization", "Session long")])
            let short = try await server.connect(headers: [("Authorization", "Session short")])
            try await eventually("both asked to refresh, long twice") { longAsked.withLockedValue { $0 } >= 2 }
            #expect(try await short.client.waitForClose(timeout: .seconds(10))?.code == 4001)
            // Past the first expiry, the renewed connection still answers.
            #expect(try await long.call(["cmd": "ping"]).reply.ok != nil)
            #expect(
                try await long.call(["cmd": "connect"]).reply.ok?["expires_at"] as? Int ?? 0 > Int(
                    Date().timeIntervalSince1970) + 3000)
        }
    }
}
