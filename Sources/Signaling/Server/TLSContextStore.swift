import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOSSL
import SwiftASN1
import X509

/// A certificate chain and private key on disk (PEM; the chain file holds the leaf first).
public struct TLSFiles: Sendable, Equatable {
    public var certificatePath: String
    public var keyPath: String

    public init(certificatePath: String, keyPath: String) {
        self.certificatePath = certificatePath
        self.keyPath = keyPath
    }
}

/// Why TLS could not be set up; the message names the file at fault.
public struct TLSSetupError: Error, Sendable, CustomStringConvertible {
    public var description: String
}

/// Holds the server's current TLS context and swaps it when the files are reloaded (SIGHUP), so a renewed
/// certificate takes effect for new connections while live sessions keep theirs.
public final class TLSContextStore: Sendable {
    public let files: TLSFiles
    private let context: NIOLockedValueBox<NIOSSLContext>

    public init(files: TLSFiles) throws(TLSSetupError) {
        self.files = files
        self.context = NIOLockedValueBox(try Self.makeContext(files))
    }

    /// The context new connections use.
    public var current: NIOSSLContext { context.withLockedValue { $0 } }

    /// Re-reads the files; on any problem the old context stays in use and the error is thrown.
    public func reload() throws(TLSSetupError) {
        let fresh = try Self.makeContext(files)
        context.withLockedValue { $0 = fresh }
    }

    /// TLS 1.2 or newer, BoringSSL's modern cipher suites, ALPN `http/1.1`.
    static func makeContext(_ files: TLSFiles) throws(TLSSetupError) -> NIOSSLContext {
        func read(_ path: String, _ what: String) throws(TLSSetupError) -> String {
            guard FileManager.default.isReadableFile(atPath: path),
                let text = try? String(contentsOfFile: path, encoding: .utf8)
            else {
                throw TLSSetupError(description: "cannot read the TLS \(what) file \(path)")
            }
            return text
        }
        let chainPEM = try read(files.certificatePath, "certificate")
        let keyPEM = try read(files.keyPath, "key")
        let chain: [NIOSSLCertificate]
        do {
            chain = try NIOSSLCertificate.fromPEMBytes(Array(chainPEM.utf8))
        } catch {
            throw TLSSetupError(
                description: "the certificate file \(files.certificatePath) holds no valid PEM certificate"
            )
        }
        guard !chain.isEmpty else {
            throw TLSSetupError(description: "the certificate file \(files.certificatePath) holds no PEM certificate")
        }
        let key: NIOSSLPrivateKey
        do {
            key = try NIOSSLPrivateKey(bytes: Array(keyPEM.utf8), format: .pem)
        } catch {
            throw TLSSetupError(description: "the key file \(files.keyPath) holds no valid PEM private key")
        }
        // The key must belong to the leaf certificate.
        do {
            let end = "-----END CERTIFICATE-----"
            guard let leafEnd = chainPEM.range(of: end) else {
                throw TLSSetupError(description: "no PEM block in \(files.certificatePath)")
            }
            let leaf = try Certificate(pemEncoded: String(chainPEM[..<leafEnd.upperBound]))
            let privateKey = try Certificate.PrivateKey(pemEncoded: keyPEM)
            guard privateKey.publicKey == leaf.publicKey else {
                throw TLSSetupError(
                    description:
                        "the key file \(files.keyPath) does not match the certificate in \(files.certificatePath)"
                )
            }
        } catch let error as TLSSetupError {
            throw error
        } catch {
            throw TLSSetupError(
                description: "cannot check that \(files.keyPath) matches \(files.certificatePath): \(error)"
            )
        }
        var configuration = TLSConfiguration.makeServerConfiguration(
            certificateChain: chain.map { .certificate($0) },
            privateKey: .privateKey(key)
        )
        configuration.minimumTLSVersion = .tlsv12
        configuration.applicationProtocols = ["http/1.1"]
        do {
            return try NIOSSLContext(configuration: configuration)
        } catch {
            throw TLSSetupError(description: "cannot use \(files.certificatePath) and \(files.keyPath): \(error)")
        }
    }
}

/// First handler on a TLS port: a TLS ClientHello starts with a handshake record (0x16); anything else
/// (a plain-text HTTP request on the TLS port) gets a short plain-text 400 and the connection is closed.
/// On a handshake it puts NIOSSL's handler behind itself, passes every byte on (the first read and any
/// that arrive before its removal completes) and leaves the pipeline.
final class TLSSniffer: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private enum Phase {
        case sniffing
        case tls
        case refused
    }

    private let store: TLSContextStore
    private var phase = Phase.sniffing

    init(store: TLSContextStore) {
        self.store = store
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch phase {
        case .tls:
            context.fireChannelRead(data)
        case .refused:
            return
        case .sniffing:
            let buffer = Self.unwrapInboundIn(data)
            guard let first = buffer.getInteger(at: buffer.readerIndex, as: UInt8.self) else { return }
            if first == 0x16 {
                phase = .tls
                do {
                    let handler = NIOSSLServerHandler(context: store.current)
                    try context.pipeline.syncOperations.addHandler(handler, position: .after(context.handler))
                } catch {
                    context.close(promise: nil)
                    return
                }
                context.fireChannelRead(data)
                context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
                return
            }
            phase = .refused
            let body = "this port speaks TLS: use https:// or wss://\n"
            let response =
                "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n\(body)"
            let loopBound = NIOLoopBound(context, eventLoop: context.eventLoop)
            context.writeAndFlush(NIOAny(context.channel.allocator.buffer(string: response))).whenComplete { _ in
                loopBound.value.close(promise: nil)
            }
        }
    }
}
