/// Incremental UTF-8 validation (RFC 3629), fed chunk by chunk so an invalid text message fails as
/// soon as the offending fragment arrives, not when the message completes (Autobahn 6.4.*).
/// Hand-written because the standard library validates whole strings only.
package struct UTF8Validator: Sendable {
    private var remaining: UInt8 = 0
    private var lower: UInt8 = 0x80
    private var upper: UInt8 = 0xBF

    package init() {}

    /// True when the bytes seen so far end on a code point boundary.
    package var isAtBoundary: Bool { remaining == 0 }

    package mutating func reset() { self = .init() }

    /// Returns false as soon as the bytes so far cannot be a prefix of valid UTF-8.
    package mutating func feed(_ bytes: UnsafeRawBufferPointer) -> Bool {
        var index = bytes.startIndex
        let end = bytes.endIndex
        while index < end {
            if remaining == 0 {
                // ASCII fast path: eight bytes at a time while aligned runs stay below 0x80.
                while index &+ 8 <= end,
                    bytes.loadUnaligned(fromByteOffset: index, as: UInt64.self) & 0x8080_8080_8080_8080 == 0
                {
                    index &+= 8
                }
                guard index < end else { break }
                let byte = bytes[index]
                index &+= 1
                if byte < 0x80 { continue }
                switch byte {
                case 0xC2...0xDF: start(1, 0x80, 0xBF)
                case 0xE0: start(2, 0xA0, 0xBF)
                case 0xE1...0xEC, 0xEE...0xEF: start(2, 0x80, 0xBF)
                case 0xED: start(2, 0x80, 0x9F)  // no UTF-16 surrogates
                case 0xF0: start(3, 0x90, 0xBF)
                case 0xF1...0xF3: start(3, 0x80, 0xBF)
                case 0xF4: start(3, 0x80, 0x8F)  // nothing above U+10FFFF
                default: return false
                }
            } else {
                let byte = bytes[index]
                index &+= 1
                guard byte >= lower, byte <= upper else { return false }
                remaining &-= 1
                lower = 0x80
                upper = 0xBF
            }
        }
        return true
    }

    private mutating func start(_ count: UInt8, _ lower: UInt8, _ upper: UInt8) {
        remaining = count
        self.lower = lower
        self.upper = upper
    }
}

extension UTF8Validator {
    /// Validates a complete byte sequence.
    package static func isValid(_ bytes: some Sequence<UInt8>) -> Bool {
        var validator = UTF8Validator()
        let array = Array(bytes)
        return array.withUnsafeBytes { validator.feed($0) } && validator.isAtBoundary
    }
}
