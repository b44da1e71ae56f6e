import SwitchboardCore
import Testing

@Suite("Admission control")
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
