/// A condition that did not become true in time.
public struct ConditionTimeout: Error, CustomStringConvertible {
    /// What was waited for, as the test failure shows it.
    public let description: String
}

/// Waits for a condition that an event will make true, checking every 5 ms, failing after `timeout`:
/// tests wait for events, never for fixed sleeps.
public func eventually(
    timeout: Duration = .seconds(20), _ what: String = "condition", _ condition: () async throws -> Bool
) async throws {
    let clock = ContinuousClock()
    let deadline = clock.now + timeout
    while clock.now < deadline {
        if try await condition() { return }
        try await Task.sleep(for: .milliseconds(5))
    }
    throw ConditionTimeout(description: "timed out waiting for \(what)")
}

/// Runs `body`, then `cleanup` (a server's stop), and waits for it whether `body` threw or not: a test's server
/// is drained before the next test starts, which `defer { Task { … } }` cannot promise.
public func finally(_ cleanup: () async -> Void, _ body: () async throws -> Void) async throws {
    do {
        try await body()
    } catch {
        await cleanup()
        throw error
    }
    await cleanup()
}
