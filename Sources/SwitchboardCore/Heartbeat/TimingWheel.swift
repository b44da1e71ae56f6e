/// A hashed timing wheel: deadlines fall into slots of `tick` nanoseconds, so advancing the clock
/// touches only the slots that passed and the entries in them, never every connection.
/// Entries are not removed when they become moot; the owner re-checks each one it gets back
/// (lazy cancellation keeps schedule and cancel O(1) without bookkeeping).
package struct TimingWheel<Element: Sendable>: Sendable {
    private struct Entry: Sendable {
        var element: Element
        var deadline: Int64
    }

    package let tick: Int64
    private var slots: [[Entry]]
    /// The first tick not yet fully processed.
    private var cursor: Int64
    package private(set) var count = 0

    /// - Parameters:
    ///   - tick: slot width in nanoseconds; deadlines fire up to one tick late.
    ///   - slotCount: deadlines further than `tick * slotCount` away wait extra rounds in their slot.
    package init(tick: Int64, slotCount: Int, now: Int64) {
        precondition(tick > 0 && slotCount > 0)
        self.tick = tick
        self.slots = Array(repeating: [], count: slotCount)
        self.cursor = now / tick
    }

    package mutating func schedule(_ element: Element, at deadline: Int64) {
        // Never file into a slot already passed: it would wait a whole round.
        let target = max(deadline / tick, cursor)
        slots[Int(target % Int64(slots.count))].append(Entry(element: element, deadline: deadline))
        count += 1
    }

    /// Removes and returns, in deadline-slot order, every element whose deadline is at or before `now`.
    /// Never early; at most one tick late when advanced every tick.
    package mutating func advance(to now: Int64, into expired: inout [Element]) {
        let last = now / tick
        guard last >= cursor else { return }
        // More than one full round elapsed: each slot needs visiting only once.
        let first = max(cursor, last - Int64(slots.count) + 1)
        for slotTick in first...last {
            let index = Int(slotTick % Int64(slots.count))
            guard !slots[index].isEmpty else { continue }
            var keep: [Entry] = []
            for entry in slots[index] {
                if entry.deadline <= now {
                    expired.append(entry.element)
                    count -= 1
                } else {
                    keep.append(entry)
                }
            }
            slots[index] = keep
        }
        // The current tick's slot may still hold entries due later in this tick: visit it again.
        cursor = last
    }
}
