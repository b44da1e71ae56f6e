import Foundation
import Logging
import NIOConcurrencyHelpers
import SwitchboardNIO
import SwitchboardServer

/// Re-reads the settings on SIGHUP (same flags and environment, the file read again) and applies what can
/// change at run time; what cannot is logged and waits for a restart.
public final class SettingsReload: Sendable {
    private let arguments: [String]
    private let environment: [String: String]
    // Lock: guards the settings in force, replaced by each successful reload (reloads may overlap).
    private let current: NIOLockedValueBox<LoadedSettings>
    private let application: ChannelsApplication
    private let verifier: TokenVerifier?
    private let logger: Logger

    /// `arguments` and `environment` are kept for every reload; `loaded` is what the server started with.
    /// `verifier` (nil without token keys) gets the reloaded keys.
    public init(
        arguments: [String], environment: [String: String] = ProcessInfo.processInfo.environment,
        loaded: LoadedSettings, application: ChannelsApplication, verifier: TokenVerifier?, logger: Logger
    ) {
        self.arguments = arguments
        self.environment = environment
        self.current = NIOLockedValueBox(loaded)
        self.application = application
        self.verifier = verifier
        self.logger = logger
    }

    /// The settings in force (the last that loaded and applied).
    public var settings: LoadedSettings { current.withLockedValue { $0 } }

    /// Returns whether the new settings were applied.
    @discardableResult
    public func reload(hub: Hub) async -> Bool {
        do {
            let new = try SettingsLoader.load(arguments: arguments, environment: environment)
            // The proxy's URLs are read at start: a namespace cannot come to need one the server lacks.
            let running = application.proxyConfiguration
            for (name, options) in new.settings.channels.namespaces.sorted(by: { $0.key < $1.key }) {
                if options.proxySubscribe, running?.subscribeURL == nil {
                    throw SettingsError("namespace \"\(name)\" has proxySubscribe; proxySubscribeUrl needs a restart")
                }
                if options.proxyPublish, running?.publishURL == nil {
                    throw SettingsError("namespace \"\(name)\" has proxyPublish; proxyPublishUrl needs a restart")
                }
            }
            if let verifier { try await verifier.replaceKeys(try new.settings.authConfiguration().keys) }
            hub.update(
                originPolicy: new.settings.transport.originPolicy, abuseLimits: new.settings.transport.abuseLimits)
            application.update(configuration: new.settings.channels)
            var changes = current.withLockedValue { current in
                defer { current = new }
                return new.changes(since: current)
            }
            // Keys can be replaced, not introduced: a server started without any has no verifier (and may be in
            // demo mode, naming users from the query string) until it restarts.
            if verifier == nil {
                let keys: Set = ["tokenSecret", "tokenPublicKey", "jwksFile"]
                changes.restartNeeded += changes.reloadable.filter(keys.contains)
                changes.reloadable.removeAll(where: keys.contains)
            }
            logger.info(
                "configuration reloaded",
                metadata: ["changed": "\(changes.reloadable.joined(separator: ", "))"])
            if !changes.restartNeeded.isEmpty {
                logger.warning(
                    "configuration changes that need a restart were not applied",
                    metadata: ["keys": "\(changes.restartNeeded.joined(separator: ", "))"])
            }
            return true
        } catch {
            logger.error(
                "configuration reload failed; keeping the running configuration", metadata: ["error": "\(error)"])
            return false
        }
    }
}
