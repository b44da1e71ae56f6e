import ArgumentParser
import Foundation
import NIOCore
import SwitchboardConfig
import SwitchboardHTTPAPI
import SwitchboardNIO
import SwitchboardServer

/// Everything `serve` refuses to start on that can be known before it binds a port: the token keys, the
/// server API's key and host, the TLS certificate and key. `check-config` runs this same function, so it
/// cannot call a configuration OK that `serve` then refuses.
func checkStartup(_ settings: ServeSettings) async throws {
    do {
        if settings.hasTokenKeys { try await TokenVerifier.check(try settings.authConfiguration()) }
    } catch {
        throw ValidationError("token keys: \(error)")
    }
    if !settings.noAPI {
        do {
            try apiConfiguration(settings).validate()
        } catch {
            throw ValidationError("server API: \(error)")
        }
    }
    if let certificate = settings.tlsCertificate, let key = settings.tlsKey {
        do {
            _ = try TLSCertificates(certificatePath: certificate, keyPath: key)
        } catch {
            throw ValidationError("TLS: \(error)")
        }
    }
}

/// The server API's configuration from the settings.
func apiConfiguration(_ settings: ServeSettings) -> APIConfiguration {
    var configuration = APIConfiguration()
    configuration.host = settings.apiHost
    configuration.port = settings.apiPort
    configuration.apiKey = settings.apiKey
    configuration.failedKeyBurst = settings.apiKeyFailureBurst
    return configuration
}

/// A listener that could not bind, named with the setting that moves it: with two servers on one host the
/// second must say which of its listeners collided, not a bare "Address already in use".
struct ListenFailure: Error, CustomStringConvertible {
    let description: String

    init(_ listener: String, host: String, port: Int, error: any Error, hint: String) {
        let errno = (error as? IOError)?.errnoCode
        let reason = errno.map { String(cString: strerror($0)) } ?? "\(error)"
        // The port hint only where the port is the problem (taken, or privileged); a bad host says so alone.
        let portProblem = errno == EADDRINUSE || errno == EACCES
        description = "\(listener) cannot listen on \(host):\(port): \(reason)\(portProblem ? "; \(hint)" : "")"
    }
}
