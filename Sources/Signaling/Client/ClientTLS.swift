import NIOCore
import NIOSSL

/// A `wss://` client setup made once and shared by every connection to one server (`signal bench`
/// opens thousands): the TLS context of some ``ClientTLSOptions`` and the name to send and check.
public struct ClientTLS: Sendable {
    let context: NIOSSLContext
    let serverHostname: String?

    /// Loads the trust roots (a private CA file, or the system trust store) for connections to `host`.
    public init(options: ClientTLSOptions, host: String) throws {
        self.context = try options.makeContext()
        // SNI and hostname checks take a name; an IP literal is verified by the chain only.
        let isIPLiteral = (try? SocketAddress(ipAddress: host, port: 0)) != nil
        self.serverHostname = isIPLiteral ? nil : host
    }

    /// Adds the TLS client handler to `pipeline`; handlers added after it see plain text.
    public func addHandler(to pipeline: ChannelPipeline.SynchronousOperations) throws {
        try pipeline.addHandler(try NIOSSLClientHandler(context: context, serverHostname: serverHostname))
    }

    /// A one-line description of a TLS error, naming a failed certificate check as such; nil when
    /// `error` is not a TLS error.
    public static func describe(_ error: any Error) -> String? {
        let text: String
        switch error {
        case let error as NIOSSLError: text = "\(error)"
        case let error as NIOSSLExtraError: text = "\(error)"
        case let error as BoringSSLError: text = "\(error)"
        default: return nil
        }
        if text.contains("CERTIFICATE_VERIFY_FAILED") || text.contains("failedToValidateHostname") {
            return "TLS certificate verification failed (the server's certificate is not trusted): \(text)"
        }
        return "TLS error: \(text)"
    }
}
