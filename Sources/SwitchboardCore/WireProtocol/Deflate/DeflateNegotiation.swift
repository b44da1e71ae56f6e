/// What one connection agreed to: the window the server compresses with and whether the client keeps its
/// context (so the server must keep its inflate state between messages).
public struct DeflateParameters: Sendable, Equatable {
    /// The LZ77 window the server compresses with, 9...15: frames compressed with it are shared by every
    /// connection that negotiated the same value.
    public var serverWindowBits: Int
    /// The client asked for a window (`server_max_window_bits`), so the answer names it.
    public var serverWindowBitsRequested: Bool
    /// The client keeps its compression context, so the connection keeps its inflate state between messages.
    /// True only if `DeflateOptions.clientContextTakeover` allows it and the offer did not refuse it.
    public var clientContextTakeover: Bool

    /// The `Sec-WebSocket-Extensions` value of the 101 answer. Computed, not stored: every connection keeps
    /// its parameters, and a stored string would cost each one a heap allocation.
    public var response: String {
        var response = "permessage-deflate; server_no_context_takeover"
        if serverWindowBitsRequested { response += "; server_max_window_bits=\(serverWindowBits)" }
        if !clientContextTakeover { response += "; client_no_context_takeover" }
        return response
    }
}

/// Picks the first acceptable permessage-deflate offer of a `Sec-WebSocket-Extensions` request header
/// (RFC 7692 §5, §7.1). An offer with an unknown, repeated or malformed parameter is declined, as is one
/// the server cannot honour (`server_max_window_bits=8`: zlib's smallest raw window is 9).
public enum DeflateNegotiation {
    /// The parameters to answer with, given every `Sec-WebSocket-Extensions` value of the request; nil when
    /// no offer is acceptable, and the connection then goes uncompressed.
    public static func negotiate(_ headerValues: [String], options: DeflateOptions) -> DeflateParameters? {
        for value in headerValues {
            for element in split(value, on: ",") {
                let parts = split(element, on: ";")
                guard let name = parts.first, name.lowercased() == "permessage-deflate" else { continue }
                if let accepted = accept(Array(parts.dropFirst()), options: options) { return accepted }
            }
        }
        return nil
    }

    private static func accept(_ parameters: [String], options: DeflateOptions) -> DeflateParameters? {
        var seen = Set<String>()
        var serverWindowBits: Int?
        var clientNoContextTakeover = false
        for parameter in parameters {
            let pair = parameter.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                .map { trim(String($0)) }
            guard let first = pair.first, !first.isEmpty else { return nil }
            let name = first.lowercased()
            let value = pair.count == 2 ? unquote(pair[1]) : nil
            guard seen.insert(name).inserted else { return nil }
            switch name {
            case "server_no_context_takeover":
                guard value == nil else { return nil }
            case "client_no_context_takeover":
                guard value == nil else { return nil }
                clientNoContextTakeover = true
            case "server_max_window_bits":
                guard let value, let bits = windowBits(value), bits >= 9 else { return nil }
                serverWindowBits = bits
            case "client_max_window_bits":
                // The inflater always uses a 15-bit window, which reads any smaller one: nothing to answer.
                if let value { guard windowBits(value) != nil else { return nil } }
            default:
                return nil
            }
        }
        return DeflateParameters(
            serverWindowBits: serverWindowBits ?? 15, serverWindowBitsRequested: serverWindowBits != nil,
            clientContextTakeover: options.clientContextTakeover && !clientNoContextTakeover)
    }

    /// 8...15 written as a plain decimal without leading zeros (§7.1.2.1).
    private static func windowBits(_ text: String) -> Int? {
        guard !text.hasPrefix("0"), text.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }), let bits = Int(text),
            (8...15).contains(bits)
        else { return nil }
        return bits
    }

    /// Splits on `separator` outside quoted strings, trimming each part and dropping empty ones.
    private static func split(_ text: String, on separator: Character) -> [String] {
        var parts: [String] = []
        var current = ""
        var quoted = false
        for character in text {
            if character == "\"" { quoted.toggle() }
            if character == separator, !quoted {
                parts.append(trim(current))
                current = ""
            } else {
                current.append(character)
            }
        }
        parts.append(trim(current))
        return parts.filter { !$0.isEmpty }
    }

    private static func unquote(_ text: String) -> String {
        guard text.count >= 2, text.hasPrefix("\""), text.hasSuffix("\"") else { return text }
        return String(text.dropFirst().dropLast())
    }

    private static func trim(_ text: String) -> String {
        String(text.drop { $0 == " " || $0 == "\t" }.reversed().drop { $0 == " " || $0 == "\t" }.reversed())
    }
}
