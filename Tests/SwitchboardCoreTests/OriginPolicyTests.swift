import SwitchboardCore
import Testing

@Suite("Origin policy", .timeLimit(.minutes(5)))
struct OriginPolicyTests {
    @Test func clientsWithoutAnOriginAreNotBrowsersAndPass() {
        for policy in [OriginPolicy.sameOrigin, .allowList([]), .any] {
            #expect(policy.allows(origin: nil, host: "example.com"))
        }
    }

    @Test func sameOriginComparesTheAuthorityWithTheHost() {
        let policy = OriginPolicy.sameOrigin
        #expect(policy.allows(origin: "https://Chat.Example.com", host: "chat.example.com"))
        #expect(policy.allows(origin: "http://127.0.0.1:8080", host: "127.0.0.1:8080"))
        #expect(policy.allows(origin: "https://example.com", host: "example.com:443"))
        #expect(policy.allows(origin: "http://example.com:80", host: "example.com"))
        #expect(!policy.allows(origin: "https://evil.example", host: "chat.example.com"))
        #expect(!policy.allows(origin: "http://127.0.0.1:3000", host: "127.0.0.1:8080"))
        #expect(!policy.allows(origin: "null", host: "example.com"))
        #expect(!policy.allows(origin: "https://example.com", host: nil))
    }

    /// DNS rebinding: the Origin of a page on a hostile name equals its Host; on loopback only loopback
    /// names, and with public hosts only those, are the server's own.
    @Test func theOwnOriginMustBeOneOfTheServersNames() {
        let policy = OriginPolicy.sameOrigin
        let loopback = OwnHostNames(bindHost: "127.0.0.1", publicHosts: [])
        #expect(loopback == .loopback)
        #expect(!policy.allows(origin: "http://rebind.example:8080", host: "rebind.example:8080", ownHosts: loopback))
        for own in ["localhost:8080", "127.0.0.1:8080", "[::1]:8080", "app.localhost:8080"] {
            #expect(policy.allows(origin: "http://\(own)", host: own, ownHosts: loopback), "\(own)")
        }
        let listed = OwnHostNames(bindHost: "0.0.0.0", publicHosts: ["Chat.Example.com"])
        #expect(policy.allows(origin: "https://chat.example.com", host: "chat.example.com", ownHosts: listed))
        #expect(!policy.allows(origin: "https://rebind.example", host: "rebind.example", ownHosts: listed))
        #expect(OwnHostNames(bindHost: "0.0.0.0", publicHosts: []) == .any)
    }

    @Test func allowListMatchesWholeOriginsWithoutCaseOrDefaultPorts() {
        let policy = OriginPolicy.allowList(["https://app.example.com", "http://localhost:3000/"])
        #expect(policy.allows(origin: "https://APP.example.com", host: "api.example.com"))
        #expect(policy.allows(origin: "https://app.example.com:443", host: "api.example.com"))
        #expect(policy.allows(origin: "http://localhost:3000", host: "localhost:8080"))
        #expect(!policy.allows(origin: "http://app.example.com", host: "api.example.com"))
        #expect(!policy.allows(origin: "https://app.example.com.evil.example", host: "api.example.com"))
        #expect(!policy.allows(origin: "http://localhost:3001", host: "localhost:8080"))
    }

    /// Before: `--allowed-origin http://good.example` locked out the server's own pages with 403.
    @Test func anAllowListWidensTheDefaultInsteadOfReplacingIt() {
        let policy = OriginPolicy.allowList(["http://good.example"])
        #expect(policy.allows(origin: "http://127.0.0.1:8080", host: "127.0.0.1:8080"))
        #expect(policy.allows(origin: "http://good.example", host: "127.0.0.1:8080"))
        #expect(!policy.allows(origin: "http://bad.example", host: "127.0.0.1:8080"))
    }

    @Test func anyAllowsEveryOrigin() {
        #expect(OriginPolicy.any.allows(origin: "https://anywhere.example", host: "example.com"))
    }
}
