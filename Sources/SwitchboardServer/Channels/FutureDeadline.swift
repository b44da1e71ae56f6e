import NIOCore

extension EventLoopFuture {
    /// This future's result delivered on `loop`, or `BrokerError.timedOut` after `timeout`: what every
    /// future from a seam (broker, presence, application) goes through before the channel layer touches
    /// its loop-bound state with the result. A future already completed on `loop` (the in-process
    /// broker's) is returned as is, without a timer.
    func arriving(on loop: any EventLoop, within timeout: TimeAmount) -> EventLoopFuture<Value> {
        loop.preconditionInEventLoop()
        if eventLoop === loop {
            // Callbacks on a completed future run at once: then there is nothing to wait for.
            var completed = false
            assumeIsolated().whenComplete { _ in completed = true }
            if completed { return self }
        }
        return hop(to: loop).bounded(by: timeout)
    }

    /// This future's result, or `BrokerError.timedOut` after `timeout`, on this future's own loop (which
    /// answers it, whatever becomes of the caller's).
    func bounded(by timeout: TimeAmount) -> EventLoopFuture<Value> {
        let promise = eventLoop.makePromise(of: Value.self)
        let timer = eventLoop.scheduleTask(in: timeout) { promise.fail(BrokerError.timedOut) }
        whenComplete { result in
            // Both this and the timer run on the same loop: whichever comes first completes the promise.
            timer.cancel()
            promise.completeWith(result)
        }
        return promise.futureResult
    }
}
