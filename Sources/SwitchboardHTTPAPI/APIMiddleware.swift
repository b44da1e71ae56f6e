import CoreMetrics
import Crypto
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import SwitchboardServer

/// Turns every failure into the client protocol's error object with a fitting HTTP status, and counts
/// requests by endpoint and status.
struct APIErrorMiddleware<Context: RequestContext>: RouterMiddleware {
    let endpoints: Set<String>
    let logger: Logger
    let factory: any MetricsFactory

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response)
        async throws -> Response
    {
        let response: Response
        do {
            response = try await next(request, context)
        } catch let error as ProtocolError {
            response = APIResponse.error(error)
        } catch let error as HTTPError {
            switch error.status.code {
            case 404: response = APIResponse.error(.notFound)
            case 405:
                response = APIResponse.error(
                    ProtocolError(116, "not found: method not allowed"), status: .methodNotAllowed)
            case 413: response = APIResponse.error(.tooLarge)
            default:
                response = APIResponse.error(
                    .badRequest(error.body ?? "\(error.status.reasonPhrase)"), status: error.status)
            }
        } catch is NIOTooManyBytesError {
            response = APIResponse.error(.tooLarge)
        } catch let error as BrokerError {
            logger.warning("API call failed at the broker", metadata: ["error": "\(error)"])
            response = APIResponse.error(.unavailable)
        } catch {
            // A store's own error (Redis down): unavailable, as documented, not an internal error.
            logger.warning("API call failed", metadata: ["error": "\(error)"])
            response = APIResponse.error(.unavailable)
        }
        let path = request.uri.path
        let endpoint = endpoints.contains(path) ? path : "other"
        Counter(
            label: "switchboard_api_requests_total",
            dimensions: [("endpoint", endpoint), ("status", "\(response.status.code)")], factory: factory
        ).increment()
        return response
    }
}

/// Requires the API key on `/api/` requests, compared in constant time; wrong keys are throttled per
/// client address (`FailedKeyAttempts`) and logged.
struct APIKeyMiddleware<Context: RequestContext>: RouterMiddleware {
    let key: [UInt8]?
    let attempts: FailedKeyAttempts
    let logger: Logger

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response)
        async throws -> Response
    {
        if let key {
            // A context without the client's address (an embedding app's own) throttles all clients as one.
            let address = (context as? any RemoteAddressRequestContext)?.remoteAddress?.ipAddress ?? "unknown"
            let now = Int64(NIODeadline.now().uptimeNanoseconds)
            if attempts.isThrottled(address, now: now) {
                var response = APIResponse.error(
                    ProtocolError(115, "unauthorized: too many wrong API keys; retry later"), status: .tooManyRequests)
                response.headers[.retryAfter] = "1"
                return response
            }
            guard let offered = Self.offeredKey(request.headers), Self.equal(Array(offered.utf8), key) else {
                if attempts.failed(address, now: now) {
                    logger.warning("wrong API key", metadata: ["client": "\(address)", "path": "\(request.uri.path)"])
                }
                throw ProtocolError.unauthorized
            }
        }
        return try await next(request, context)
    }

    static func offeredKey(_ headers: HTTPFields) -> String? {
        if let name = HTTPField.Name("X-API-Key"), let value = headers[name] { return value }
        guard let authorization = headers[.authorization] else { return nil }
        let parts = authorization.split(separator: " ", maxSplits: 1)
        guard parts.count == 2, parts[0].lowercased() == "apikey" else { return nil }
        return String(parts[1])
    }

    /// Compares digests, so the time taken says nothing about how much of the key was right, nor its length.
    static func equal(_ offered: [UInt8], _ key: [UInt8]) -> Bool {
        let a = Array(SHA256.hash(data: offered))
        let b = Array(SHA256.hash(data: key))
        var difference: UInt8 = 0
        for (x, y) in zip(a, b) { difference |= x ^ y }
        return difference == 0
    }
}

/// JSON responses.
enum APIResponse {
    static func json(_ text: String, status: HTTPResponse.Status = .ok) -> Response {
        Response(
            status: status, headers: [.contentType: "application/json"],
            body: .init(byteBuffer: ByteBuffer(string: text)))
    }

    static func error(_ error: ProtocolError, status: HTTPResponse.Status? = nil) -> Response {
        json(
            "{\"error\":{\"code\":\(error.code),\"message\":\(quote(error.message))}}",
            status: status ?? Self.status(for: error))
    }

    static func status(for error: ProtocolError) -> HTTPResponse.Status {
        switch error.code {
        case 104: return .forbidden
        case 110: return .serviceUnavailable
        case 115: return .unauthorized
        case 116: return .notFound
        case 117: return .contentTooLarge
        default: return .badRequest
        }
    }

    static func quote(_ string: String) -> String {
        let data =
            (try? JSONSerialization.data(withJSONObject: string, options: [.fragmentsAllowed])) ?? Data("\"\"".utf8)
        return String(decoding: data, as: UTF8.self)
    }
}
