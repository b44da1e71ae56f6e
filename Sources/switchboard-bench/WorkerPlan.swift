/// What one worker process does: its share of the connections and of the senders.
struct WorkerPlan: Codable, Sendable {
    enum Mode: String, Codable, Sendable, CaseIterable {
        case idle, fanout, echo, churn
    }

    var mode: Mode
    var host: String
    /// Connection i goes to `ports[i % ports.count]` (several nodes of a cluster).
    var ports: [Int]

    func port(forIndex index: Int) -> Int { ports[index % max(ports.count, 1)] }
    var path: String
    /// Connections this worker opens (churn: connections kept in flight at once).
    var connections: Int
    /// Global index of this worker's first connection; picks source addresses and sender ids.
    var firstIndex: Int
    var sourceAddresses: Int
    /// Connections with a global index below this send (fanout); all of them in echo mode.
    var totalSenders: Int
    /// Messages per second per sender; 0 sends as fast as the window allows.
    var ratePerSender: Double
    /// Messages a sender may have in flight (its own broadcast not yet seen back) at maximum rate.
    var window: Int
    var messageSize: Int
    /// Connections opened at once while connecting.
    var connectConcurrency: Int
    /// Speak client protocol v1 (`switchboard serve`): connection i subscribes to channel
    /// `channel` (or `channel` + (i % channels) when channels > 1), senders publish to their own.
    var channel: String?
    var channels: Int
    /// Raw pub/sub channels (an nchan `nchan_pubsub` location) instead of protocol v1: connection i opens
    /// `channelPath` + its channel's name; a text message it sends is published, and every text message
    /// it receives is a publication.
    var channelPath: String?
    /// Extra upgrade headers, as name-value pairs (`Authorization: Bearer …`).
    var headers: [[String]] = []
    /// wss://: the CA certificate (PEM file) that signed the server's certificate for `localhost`.
    var tlsAuthority: String?
}

/// One line a worker prints on stdout, as JSON: progress every second, then a final report.
struct WorkerReport: Codable, Sendable {
    var final = false
    var connected = 0
    var connectFailures = 0
    var lastError: String?
    var sent = 0
    var received = 0
    var disconnected = 0
    var churned = 0
    var histogram: Histogram?
}
