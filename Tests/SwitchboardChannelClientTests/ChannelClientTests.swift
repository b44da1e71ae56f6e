import Foundation
import NIOConcurrencyHelpers
import NIOCore
import SwitchboardChannelClient
import SwitchboardTestSupport
import Testing

@Suite("ChannelClient", .timeLimit(.minutes(2)))
struct ChannelClientTests {
    enum Fault: String, Sendable, CaseIterable {
        /// The link is reset (RST): the client sees the connection end at once.
        case reset
        /// The link goes silent without closing: only the client's watchdog can tell.
        case blackhole
    }

    @Test(arguments: Fault.allCases)
    func recoversEveryMissedPublicationExactlyOnce(fault: Fault) async throws {
        let server = try await TestServer.start()
        let proxy = try await server.proxy()
        let client = makeClient(port: proxy.port)
        try await finally({ await stop(client, proxy, server) }) {
            let states = Recorder(client.states)
            let subscription = try client.subscribe("chat:recovery")
            let events = Recorder(subscription.events)
            client.connect()
            try await events.wait("subscribed") { $0.subscriptions == [nil] }
            for index in 1...20 {
                #expect(try await client.publish(channel: "chat:recovery", data: "\(index)") == index)
            }
            try await events.wait("the first 20 publications") { $0.offsets.count == 20 }

            switch fault {
            case .reset: proxy.resetOpenLinks()
            case .blackhole: proxy.blackholeOpenLinks()
            }
            for index in 21...40 { try await server.publish("chat:recovery", "\(index)") }

            try await events.wait("all 40 after the reconnect", timeout: .seconds(30)) { $0.offsets.count >= 40 }
            try await client.ping()  // anything still on its way has arrived by its reply
            #expect(events.items.offsets == Array(1...40))
            #expect(events.items.publications.map(\.data) == (1...40).map { "\($0)" })
            #expect(events.items.publications.filter(\.recovered).count > 0 || fault == .reset)
            #expect(events.items.subscriptions == [nil, true])
            #expect(states.items.filter(\.isConnected).count == 2)
            #expect(states.items.contains { if case .disconnected(1006, _, true) = $0 { true } else { false } })
        }
    }

    @Test func reportsRecoveredFalseOnceHistoryNoLongerReachesBack() async throws {
        let server = try await TestServer.start()
        let proxy = try await server.proxy()
        let client = makeClient(port: proxy.port)
        try await finally({ await stop(client, proxy, server) }) {
            let states = Recorder(client.states)
            let subscription = try client.subscribe("tiny:prices")
            let events = Recorder(subscription.events)
            client.connect()
            try await events.wait("subscribed") { $0.subscriptions == [nil] }
            try await server.publish("tiny:prices", "1")
            try await server.publish("tiny:prices", "2")
            try await events.wait("two publications") { $0.offsets == [1, 2] }

            // Cut off, new connections included, while five publications pass through a history of three.
            proxy.set(.blackhole)
            proxy.resetOpenLinks()
            try await states.wait("the disconnect") { $0.contains(where: \.isDisconnected) }
            for index in 3...7 { try await server.publish("tiny:prices", "\(index)") }
            proxy.set(.pass)

            try await events.wait("the resubscribe", timeout: .seconds(30)) { $0.subscriptions == [nil, false] }
            #expect(events.items.offsets == [1, 2])
            try await server.publish("tiny:prices", "8")
            try await events.wait("the next publication, live") { $0.offsets == [1, 2, 8] }
        }
    }

    @Test func refreshesTheTokenBeforeItExpires() async throws {
        let server = try await TestServer.start(verifier: try await TestTokens.verifier(refreshNotice: .seconds(2)))
        let calls = NIOLockedValueBox(0)
        // The first token expires within 4 s; the server asks for a new one 2 s before.
        let firstExpiry = ContinuousClock.now + .seconds(4)
        let client = makeClient(port: server.port) {
            $0.getToken = {
                let call = calls.withLockedValue {
                    $0 += 1
                    return $0
                }
                return TestTokens.make(user: "ada", expiresIn: call == 1 ? 4 : 600)
            }
        }
        try await finally({ await stop(client, nil, server) }) {
            let states = Recorder(client.states)
            client.connect()
            try await states.wait("connected") { $0.contains(where: \.isConnected) }
            try await eventually("the refresh") { calls.withLockedValue { $0 } >= 2 }
            // Only time can show that the first token's expiry passed without a disconnect.
            try await Task.sleep(until: firstExpiry + .seconds(1.5), clock: .continuous)
            try await client.ping()
            #expect(states.items.filter(\.isConnected).count == 1)
            let disconnects = states.items.filter(\.isDisconnected)
            #expect(disconnects.isEmpty)
            #expect(client.state == .connected(client: client.state.clientID, user: "ada"))
        }
    }

    @Test func subscribesBeforeConnectingAndSpeaksEveryCommand() async throws {
        let server = try await TestServer.start()
        let client = makeClient(port: server.port)
        try await finally({ await stop(client, nil, server) }) {
            let subscription = try client.subscribe("chat:early")
            let events = Recorder(subscription.events)
            await #expect(throws: ChannelClientError.notConnected) { try await client.ping() }
            client.connect()
            try await events.wait("subscribed") { $0.subscriptions == [nil] }

            #expect(try await client.publish(channel: "chat:early", data: #"{"text": "hi"}"#) == 1)
            try await server.publish("chat:early", "[2]")
            try await events.wait("two publications") { $0.offsets == [1, 2] }
            let first = try #require(events.items.publications.first)
            #expect(first.data == #"{"text": "hi"}"#)  // byte for byte, spaces included
            #expect(try first.decode([String: String].self) == ["text": "hi"])
            try await events.wait("its own join") { $0.contains { if case .join = $0 { true } else { false } } }

            let history = try await client.history(channel: "chat:early", limit: 10)
            #expect(history.publications.map(\.data) == [#"{"text": "hi"}"#, "[2]"])
            #expect(try await client.history(channel: "chat:early", since: 1).publications.map(\.offset) == [2])
            let presence = try await client.presence(channel: "chat:early")
            #expect(presence.connections == 1)
            #expect(presence.members?.count == 1)

            let refused = await #expect(throws: ChannelClientError.self) {
                try await client.presence(channel: "plain")
            }
            #expect(refused?.serverCode == 104)
            await #expect(throws: ChannelClientError.invalidJSON) {
                try await client.publish(channel: "chat:early", data: "{nope")
            }
            #expect(throws: ChannelClientError.alreadySubscribed(channel: "chat:early")) {
                try client.subscribe("chat:early")
            }
        }
    }

    @Test func reconnectsToARestartedServer() async throws {
        let first = try await TestServer.start()
        let port = first.port
        let servers = NIOLockedValueBox([first])
        let client = makeClient(port: port)
        try await finally({
            await client.close()
            for server in servers.withLockedValue({ $0 }) { await server.stop() }
        }) {
            let states = Recorder(client.states)
            let subscription = try client.subscribe("chat:restart")
            let events = Recorder(subscription.events)
            client.connect()
            try await events.wait("subscribed") { $0.subscriptions == [nil] }
            try await first.publish("chat:restart", "1")
            try await events.wait("the first publication") { $0.offsets == [1] }

            await first.stop()
            try await states.wait("the shutdown notice") {
                $0.contains { if case .disconnected(1001, _, true) = $0 { true } else { false } }
            }
            let second = try await TestServer.restart(on: port)
            servers.withLockedValue { $0.append(second) }

            // History was in the old process: the new epoch cannot recover it.
            try await events.wait("the resubscribe", timeout: .seconds(30)) { $0.subscriptions == [nil, false] }
            try await second.publish("chat:restart", #""again""#)
            try await events.wait("the publication on the new server") { $0.publications.count == 2 }
            let publications = events.items.publications
            #expect(publications.last?.offset == 1)
            #expect(publications.last?.data == #""again""#)
            #expect(publications.first?.epoch != publications.last?.epoch)
        }
    }

    @Test func stopsForGoodAfterARefusedToken() async throws {
        let server = try await TestServer.start(verifier: try await TestTokens.verifier())
        let client = makeClient(port: server.port) {
            $0.token = TestTokens.make(user: "ada", expiresIn: 60, secret: TestTokens.otherSecret)
        }
        try await finally({ await stop(client, nil, server) }) {
            let subscription = try client.subscribe("chat:refused")
            let events = Recorder(subscription.events)
            let states = Recorder(client.states)
            client.connect()
            try await eventually("the states to finish") { states.finished }
            try await eventually("the subscription's events to finish") { events.finished }

            let last = try #require(states.items.last)
            guard case .disconnected(let code, let reason, let willReconnect) = last else {
                Issue.record("the last state is \(last)")
                return
            }
            #expect(code == 4003)
            #expect(reason.contains("bad signature"))
            #expect(!willReconnect)
            #expect(states.items.filter(\.isConnecting).count == 1)
            #expect(events.items.isEmpty)
            await #expect(throws: ChannelClientError.closed(code: 4003, reason: reason)) { try await client.ping() }
            #expect(throws: ChannelClientError.self) { try client.subscribe("chat:other") }
        }
    }

    @Test func cancellationEndsOnlyWhatWasCancelled() async throws {
        let server = try await TestServer.start()
        let proxy = try await server.proxy()
        proxy.set(.blackhole)  // no connection yet: commands wait for one
        let client = makeClient(port: proxy.port)
        try await finally({ await stop(client, proxy, server) }) {
            let states = Recorder(client.states)
            let first = try client.subscribe("chat:one")
            let second = try client.subscribe("chat:two")
            let secondEvents = Recorder(second.events)
            client.connect()

            // A command waiting for the connection.
            let waiting = Task { try await client.publish(channel: "chat:two", data: "0") }
            waiting.cancel()
            await #expect(throws: CancellationError.self) { try await waiting.value }

            proxy.set(.pass)
            try await secondEvents.wait("subscribed", timeout: .seconds(30)) { $0.subscriptions == [nil] }

            // A task iterating one subscription: its stream ends, the other subscription goes on.
            let iterating = Task {
                var count = 0
                for await _ in first.events { count += 1 }
                return count
            }
            iterating.cancel()
            _ = await iterating.value
            try await server.publish("chat:two", "1")
            try await secondEvents.wait("a publication on the other subscription") { $0.offsets == [1] }

            // A command on its way (its frame dropped, so no reply comes).
            proxy.set(.dropClientToServer)
            let inFlight = Task { try await client.publish(channel: "chat:two", data: #""lost""#) }
            try await Task.sleep(for: .milliseconds(200))  // time to be sent; cancelled either way
            inFlight.cancel()
            await #expect(throws: CancellationError.self) { try await inFlight.value }
            proxy.set(.pass)
            try await client.ping()
            try await server.publish("chat:two", "2")
            try await secondEvents.wait("the connection still delivers") { $0.offsets == [1, 2] }
            #expect(states.items.filter(\.isConnected).count == 1)

            await client.close()
            try await eventually("every stream to finish") { secondEvents.finished && states.finished }
            #expect(states.items.last == .disconnected(code: 1000, reason: "client closed", willReconnect: false))
            await #expect(throws: ChannelClientError.self) { try await client.publish(channel: "chat:two", data: "3") }
        }
    }

    /// Headers go with the upgrade: a server that authenticates by a session cookie (an app's own) sees it.
    @Test func sendsItsHeadersWithTheUpgrade() async throws {
        let server = try await TestServer.start(authenticate: { request in
            guard request.headers["Cookie"].contains("session=ada") else {
                return .reject(.unauthorized, reason: "no session")
            }
            return .accept(userID: "ada", subprotocol: nil)
        })
        let withCookie = makeClient(port: server.port) { $0.headers = [("Cookie", "session=ada")] }
        let without = makeClient(port: server.port)
        try await finally({
            await withCookie.close()
            await without.close()
            await server.stop()
        }) {
            let states = Recorder(withCookie.states)
            withCookie.connect()
            try await states.wait("connected as ada") {
                $0.contains { if case .connected(_, "ada") = $0 { true } else { false } }
            }
            let refused = Recorder(without.states)
            without.connect()
            // 401 at the upgrade does not change by retrying: the client stops.
            try await eventually("the refused client to stop") { refused.finished }
            #expect(refused.items.contains { if case .disconnected(_, _, false) = $0 { true } else { false } })
        }
    }
}

/// Closes the client first (its close handshake goes through the proxy), then the proxy and the server.
private func stop(_ client: ChannelClient, _ proxy: FaultProxy?, _ server: TestServer) async {
    await client.close()
    await proxy?.stop()
    await server.stop()
}

extension ConnectionState {
    fileprivate var clientID: String {
        if case .connected(let client, _) = self { return client }
        return ""
    }

}
