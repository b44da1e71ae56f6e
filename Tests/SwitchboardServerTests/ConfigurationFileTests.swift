import Foundation
import SwitchboardCore
import SwitchboardServer
import Testing

@Suite("Configuration file", .timeLimit(.minutes(5)))
struct ConfigurationFileTests {
    private func parse(_ json: String) throws -> ChannelsConfiguration {
        try ChannelsConfiguration(json: Data(json.utf8))
    }

    private func problem(_ json: String) -> String? {
        do {
            _ = try parse(json)
            return nil
        } catch {
            return "\(error)"
        }
    }

    @Test func namespacesAndLimitsAreRead() throws {
        let configuration = try parse(
            """
            {"publishRate": 5, "publishBurst": 10, "maxSubscriptionsPerConnection": 8, "maxRejectedPublishes": 3,
             "namespaces": {
               "": {"clientsMayPublish": false},
               "chat": {"historySize": 50, "historyTTL": 1.5, "presence": true, "joinLeave": true},
               "prices": {"slowConsumer": "latest", "showPublisher": false},
               "hall": {"presence": true, "countsOnly": true, "joinLeaveMaxMembers": 10, "slowConsumer": "dropOldest"}}}
            """)
        #expect(configuration.publishRate == 5)
        #expect(configuration.publishBurst == 10)
        #expect(configuration.maxSubscriptionsPerConnection == 8)
        #expect(configuration.maxRejectedPublishes == 3)
        #expect(Set(configuration.namespaces.keys) == ["", "chat", "prices", "hall"])
        #expect(configuration.namespaces[""]?.clientsMayPublish == false)
        let chat = try #require(configuration.namespaces["chat"])
        #expect(chat.historySize == 50)
        #expect(chat.historyTTL == .milliseconds(1500))
        #expect(chat.presence && chat.joinLeave && !chat.countsOnly)
        #expect(configuration.namespaces["prices"]?.slowConsumer == .latest)
        #expect(configuration.namespaces["prices"]?.showPublisher == false)
        #expect(configuration.namespaces["hall"]?.slowConsumer == .dropOldest)
        #expect(configuration.namespaces["hall"]?.joinLeaveMaxMembers == 10)
    }

    @Test func leftOutKeysKeepTheirDefaults() throws {
        let configuration = try parse(#"{"namespaces": {"feed": {}}}"#)
        let defaults = ChannelsConfiguration()
        #expect(configuration.publishRate == defaults.publishRate)
        #expect(configuration.maxSubscriptionsPerConnection == defaults.maxSubscriptionsPerConnection)
        #expect(Set(configuration.namespaces.keys) == ["feed"])
        let feed = try #require(configuration.namespaces["feed"])
        #expect(feed.historySize == 0 && !feed.presence && feed.clientsMayPublish && feed.slowConsumer == .disconnect)
        #expect(try parse("{}").namespaces.keys.sorted() == [""])
    }

    /// The example in docs/CONFIGURATION.md is a file users copy: it must stay valid.
    @Test func theDocumentedExampleParses() throws {
        let docs = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("docs/CONFIGURATION.md")
        let text = try String(contentsOf: docs, encoding: .utf8)
        let blocks = text.components(separatedBy: "```json\n").dropFirst().compactMap {
            $0.components(separatedBy: "```").first
        }
        let example = try #require(blocks.first)
        let configuration = try parse(example)
        #expect(Set(configuration.namespaces.keys) == ["", "chat", "hall", "prices", "feed"])
        #expect(configuration.namespaces["prices"]?.slowConsumer == .latest)
    }

    @Test func mistakesAreNamedByTheirPath() {
        #expect(problem("{")?.hasPrefix("configuration: not valid JSON") == true)
        #expect(problem("[]") == "configuration: must be an object")
        #expect(problem(#"{"publishRat": 5}"#) == "publishRat: unknown key")
        #expect(problem(#"{"namespaces": {"chat": {"presense": true}}}"#) == "namespaces.chat.presense: unknown key")
        #expect(
            problem(#"{"namespaces": {"chat": {"presence": 1}}}"#) == "namespaces.chat.presence: must be true or false")
        #expect(
            problem(#"{"namespaces": {"chat": {"historySize": true}}}"#)
                == "namespaces.chat.historySize: must be a number")
        #expect(
            problem(#"{"namespaces": {"chat": {"historySize": 2.5}}}"#)
                == "namespaces.chat.historySize: must be a whole number")
        #expect(problem(#"{"publishRate": -1}"#) == "publishRate: must not be negative")
        #expect(problem(#"{"publishRate": 0}"#) == "publishRate: must be greater than 0")
        #expect(problem(#"{"publishBurst": 0.5}"#) == "publishBurst: must be at least 1")
        #expect(
            problem(#"{"namespaces": {"a": {"historyTTL": 1e300}}}"#)
                == "namespaces.a.historyTTL: must be at most 31536000 seconds (a year)")
        #expect(
            problem(#"{"namespaces": {"a": {"slowConsumer": "fast"}}}"#)
                == #"namespaces.a.slowConsumer: must be "disconnect", "dropOldest" or "latest""#)
        #expect(problem(#"{"namespaces": {"a:b": {}}}"#) == #"namespaces: "a:b" is not a valid namespace name"#)
        #expect(
            problem(#"{"namespaces": {"a": {"joinLeave": true}}}"#)
                == "namespaces.a.presence: must be true when joinLeave or countsOnly is")
        #expect(problem(#"{"namespaces": []}"#) == "namespaces: must be an object")
    }
}
