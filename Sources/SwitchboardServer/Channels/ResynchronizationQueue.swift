import NIOCore

/// Bounds how many recovery reads one loop has at the broker at once. After a Redis hiccup every channel
/// resynchronizes together: thousands of reads pipelined at once would time out together (each waiting
/// behind all the others), and every subscriber would be closed 1013 for a store that is fine. The rest
/// wait here, in order, their subscriptions still holding live events. Touched only on its loop.
final class ResynchronizationQueue {
    private let limit: Int
    private var running = 0
    private var waiting = CircularBuffer<() -> Void>()
    /// Starting reads: one that finishes at once (nothing left to read, a store failing fast) only counts
    /// down, and this loop starts the next, so a storm never recurses one read inside another.
    private var starting = false

    init(limit: Int) { self.limit = max(limit, 1) }

    /// Runs `read` now or once a running one finishes; `read` must call `finished` exactly once.
    func enqueue(_ read: @escaping () -> Void) {
        waiting.append(read)
        startWaiting()
    }

    func finished() {
        running -= 1
        startWaiting()
    }

    private func startWaiting() {
        guard !starting else { return }
        starting = true
        defer { starting = false }
        while running < limit, let next = waiting.popFirst() {
            running += 1
            next()
        }
    }

    var inFlight: Int { running }
}
