import NIOCore

/// Bounds how many recovery reads one loop has at the broker at once. After a Redis hiccup every channel
/// resynchronizes together: thousands of reads pipelined at once would time out together (each waiting
/// behind all the others), and every subscriber would be closed 1013 for a store that is fine. The rest
/// wait here, in order, their subscriptions still holding live events. Touched only on its loop.
final class ResynchronizationQueue {
    private let limit: Int
    private var running = 0
    private var waiting = CircularBuffer<() -> Void>()

    init(limit: Int) { self.limit = max(limit, 1) }

    /// Runs `read` now or once a running one finishes; `read` must call `finished` exactly once.
    func enqueue(_ read: @escaping () -> Void) {
        guard running < limit else { return waiting.append(read) }
        running += 1
        read()
    }

    func finished() {
        if let next = waiting.popFirst() {
            next()
        } else {
            running -= 1
        }
    }

    var inFlight: Int { running }
}
