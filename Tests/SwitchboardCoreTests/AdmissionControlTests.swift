import SwitchboardCore
import Testing

@Suite("Admission control", .timeLimit(.minutes(5)))
struct AdmissionControlTests {
    private func take(_ bucket: inout TokenBucket, at now: Int64) -> Bool { bucket.take(now: now) }

    private func admitted(_ attempts: Int, by admission: inout AdmissionControl, at now: Int64) -> Int {
        (0..<attempts).reduce(0) { count, _ in count + (admission.admitUpgrade(now: now) ? 1 : 0) }
    }

    @Test func pendingHandshakesAreBounded() {
        var admission = AdmissionControl(maxPending: 2, upgradesPerSecond: 0, now: 0)
        #expect(admission.hasRoomForHandshake)
        admission.handshakeStarted()
        admission.handshakeStarted()
        #expect(!admission.hasRoomForHandshake)
        admission.handshakeEnded()
        #expect(admission.hasRoomForHandshake)
        #expect(admission.pending == 1)
    }

    @Test func withoutARateEveryUpgradeIsAdmitted() {
        var admission = AdmissionControl(maxPending: 1, upgradesPerSecond: 0, now: 0)
        #expect(admitted(10_000, by: &admission, at: 0) == 10_000)
    }

    @Test func theRateAllowsASecondsWorthThenRefills() {
        let second: Int64 = 1_000_000_000
        var admission = AdmissionControl(maxPending: 1, upgradesPerSecond: 100, now: 0)
        #expect(admitted(100, by: &admission, at: 0) == 100)
        #expect(admitted(1, by: &admission, at: 0) == 0)
        #expect(admitted(1, by: &admission, at: second / 100) == 1)  // one token back after 10 ms
        #expect(admitted(1, by: &admission, at: second / 100) == 0)
        // Refills up to the burst only, however long it waited.
        #expect(admitted(100, by: &admission, at: 60 * second) == 100)
        #expect(admitted(1, by: &admission, at: 60 * second) == 0)
    }

    @Test func aClockThatGoesBackDoesNotDrainTheBucket() {
        var bucket = TokenBucket(rate: 1, burst: 2, now: 10_000_000_000)
        #expect(take(&bucket, at: 9_000_000_000) == true)
        #expect(take(&bucket, at: 9_000_000_000) == true)
        #expect(take(&bucket, at: 9_000_000_000) == false)
        #expect(take(&bucket, at: 11_000_000_000) == true)
    }
}

@Suite("Client address and per-address table", .timeLimit(.minutes(5)))
struct ClientAddressTests {
    @Test(
        arguments: [
            ("127.0.0.1", ["10.0.0.1"], [], ["127.0.0.1"], "10.0.0.1"),
            ("127.0.0.1", ["1.2.3.4, 10.0.0.1"], [], ["127.0.0.1"], "10.0.0.1"),
            ("127.0.0.1", ["10.0.0.1, 127.0.0.2"], [], ["127.0.0.1", "127.0.0.2"], "10.0.0.1"),
            ("192.0.2.9", ["10.0.0.1"], [], ["127.0.0.1"], "192.0.2.9"),
            ("127.0.0.1", [], [#"for=192.0.2.60;proto=http, for="[2001:db8::1]:4711""#], ["127.0.0.1"], "2001:db8::1"),
            ("127.0.0.1", [], [], ["127.0.0.1"], "127.0.0.1"),
        ])
    func resolve(peer: String, forwardedFor: [String], forwarded: [String], trusted: [String], expected: String) {
        #expect(
            ClientAddress.resolve(
                peer: peer, forwardedFor: forwardedFor, forwarded: forwarded, trusted: AddressRanges(trusted))
                == expected)
    }

    /// A load balancer's addresses come from a subnet: trusted proxies take CIDR ranges, IPv4 and IPv6.
    @Test(
        arguments: [
            ("10.1.2.3", ["1.2.3.4"], ["10.0.0.0/8"], "1.2.3.4"),
            ("11.1.2.3", ["1.2.3.4"], ["10.0.0.0/8"], "11.1.2.3"),
            ("172.16.5.4", ["1.2.3.4"], ["172.16.0.0/12"], "1.2.3.4"),
            ("172.32.0.1", ["1.2.3.4"], ["172.16.0.0/12"], "172.32.0.1"),
            ("fd00::7", ["2001:db8::5"], ["fd00::/8"], "2001:db8::5"),
            ("fe80::1", ["2001:db8::5"], ["fd00::/8"], "fe80::1"),
            ("10.0.0.1", ["1.2.3.4, 10.0.0.9"], ["10.0.0.0/24"], "1.2.3.4"),
            ("::ffff:10.0.0.1", ["1.2.3.4"], ["10.0.0.0/8"], "1.2.3.4"),
        ])
    func cidrRanges(peer: String, forwardedFor: [String], trusted: [String], expected: String) {
        #expect(
            ClientAddress.resolve(
                peer: peer, forwardedFor: forwardedFor, forwarded: [], trusted: AddressRanges(trusted))
                == expected)
    }

    @Test func rangesThatAreNotAddressesAreReported() {
        #expect(
            AddressRanges(["10.0.0.0/33", "bad", "10.0.0.0/8", "::1/129", "::1"]).invalid == [
                "10.0.0.0/33", "bad", "::1/129",
            ])
    }

    /// Behind a reverse proxy on the same host every client connects from loopback: a forwarded request is
    /// not local, whether the proxy is trusted or not.
    @Test func loopbackIsLocalOnlyWithoutForwarding() {
        let none = AddressRanges([])
        #expect(ClientAddress.isLocal(peer: "127.0.0.1", forwardedFor: [], forwarded: [], trusted: none))
        #expect(ClientAddress.isLocal(peer: "::1", forwardedFor: [], forwarded: [], trusted: none))
        #expect(!ClientAddress.isLocal(peer: "127.0.0.1", forwardedFor: ["8.8.8.8"], forwarded: [], trusted: none))
        #expect(!ClientAddress.isLocal(peer: "127.0.0.1", forwardedFor: [], forwarded: ["for=8.8.8.8"], trusted: none))
        #expect(
            !ClientAddress.isLocal(
                peer: "127.0.0.1", forwardedFor: [], forwarded: [], trusted: AddressRanges(["127.0.0.0/8"])))
        #expect(!ClientAddress.isLocal(peer: "192.0.2.1", forwardedFor: [], forwarded: [], trusted: none))
    }

    @Test func tableCountsReleasesAndForgets() {
        var limits = AbuseLimits()
        limits.maxConnectionsPerAddress = 2
        var table = AddressTable(logInterval: 1_000)
        #expect(table.admit("a", limits: limits, now: 0) == .counted)
        #expect(table.admit("a", limits: limits, now: 0) == .counted)
        #expect(table.admit("a", limits: limits, now: 0) == .tooMany(log: true))
        #expect(table.admit("a", limits: limits, now: 10) == .tooMany(log: false))  // logged once per interval
        #expect(table.admit("b", limits: limits, now: 0) == .counted)
        table.release("a", now: 0)
        #expect(table.admit("a", limits: limits, now: 0) == .counted)
        for name in ["a", "a", "b"] { table.release(name, now: 0) }
        #expect(table.count == 0)
        #expect(table.admit("a", limits: AbuseLimits(), now: 0) == .admitted)  // no limit: nothing counted
        #expect(table.count == 0)
    }

    /// Connecting and closing in a loop does not reset the rate: the bucket outlives the last connection
    /// until it has refilled, and is swept after.
    @Test func rateSurvivesClosedConnections() {
        var limits = AbuseLimits()
        limits.connectionsPerSecondPerAddress = 1
        var table = AddressTable()
        #expect(table.admit("a", limits: limits, now: 0) == .counted)
        table.release("a", now: 1_000)
        #expect(table.admit("a", limits: limits, now: 2_000) == .tooFast(log: true))
        #expect(table.count == 1)
        #expect(table.admit("a", limits: limits, now: 1_100_000_000) == .counted)
        table.release("a", now: 3_000_000_000)
        #expect(table.count == 0)
    }
}
