import ArgumentParser
import Crypto
import Foundation
import Logging
import NIOCore
import NIOPosix
import PeerMesh

/// The flags that put a hub on the mesh (`signal serve` and `signal mesh node`).
struct MeshOptions: ParsableArguments {
    @Option(help: "Accept mesh links on HOST:PORT; joins this hub to a PeerMesh (no Redis, no central server).")
    var meshListen: String?
    @Option(help: "A mesh node to join through, HOST:PORT (repeatable). None: this node starts a new mesh.")
    var meshSeed: [String] = []
    @Option(help: "File holding the mesh's shared secret (at least 32 bytes); also SIGNAL_MESH_SECRET.")
    var meshSecretFile: String?
    @Option(help: "File holding this node's Ed25519 key (created on first run). Default: a new key each run.")
    var meshKeyFile: String?
    @Option(help: "Host other nodes dial to reach this one (default: the --mesh-listen host).")
    var meshAdvertise: String?
    @Option(help: "PEM certificate chain for TLS on mesh links.") var meshTlsCert: String?
    @Option(help: "PEM private key for --mesh-tls-cert.") var meshTlsKey: String?
    @Option(help: "PEM CA that signs every node's certificate: links then use mutual TLS.") var meshCa: String?

    var enabled: Bool { meshListen != nil }

    func validate() throws {
        guard enabled else {
            if !meshSeed.isEmpty || meshSecretFile != nil || meshTlsCert != nil {
                throw ValidationError("the --mesh-* options need --mesh-listen HOST:PORT")
            }
            return
        }
        guard Self.split(meshListen!) != nil else { throw ValidationError("--mesh-listen must be HOST:PORT") }
        for seed in meshSeed where Self.split(seed) == nil {
            throw ValidationError("--mesh-seed \(seed) must be HOST:PORT")
        }
        guard (meshTlsCert == nil) == (meshTlsKey == nil) else {
            throw ValidationError("--mesh-tls-cert and --mesh-tls-key go together")
        }
        if meshCa != nil && meshTlsCert == nil {
            throw ValidationError("--mesh-ca needs --mesh-tls-cert and --mesh-tls-key")
        }
    }

    static func split(_ address: String) -> (String, Int)? {
        guard let colon = address.lastIndex(of: ":"), let port = Int(address[address.index(after: colon)...]),
            (0...65535).contains(port)
        else { return nil }
        return (String(address[..<colon]), port)
    }

    /// The mesh node this configuration describes, not started yet (nil without `--mesh-listen`), its
    /// links served on `group` (the hub's own loops, so a relayed signal is written to its client without a
    /// hop between threads).
    func makeRuntime(
        logger: Logger,
        metrics: MeshMetrics? = nil,
        group: any EventLoopGroup
    ) throws -> MeshRuntime? {
        guard let listen = meshListen, let (host, port) = Self.split(listen) else { return nil }
        let secret: MeshSecret
        do {
            if let file = meshSecretFile {
                let text = try String(contentsOfFile: file, encoding: .utf8).trimmingCharacters(
                    in: .whitespacesAndNewlines
                )
                secret = try MeshSecret(bytes: Array(text.utf8))
            } else if let text = ProcessInfo.processInfo.environment["SIGNAL_MESH_SECRET"] {
                secret = try MeshSecret(bytes: Array(text.utf8))
            } else {
                throw ValidationError("a mesh needs its shared secret: --mesh-secret-file FILE or SIGNAL_MESH_SECRET")
            }
        } catch let error as MeshIdentityError {
            throw ValidationError("mesh secret: \(error.description)")
        } catch let error as ValidationError {
            throw error
        } catch {
            throw ValidationError(
                "cannot read --mesh-secret-file \(meshSecretFile ?? ""): \(error.localizedDescription)"
            )
        }
        var configuration = MeshRuntimeConfiguration(
            listenHost: host,
            listenPort: port,
            seeds: meshSeed,
            secret: secret,
            identity: try loadIdentity()
        )
        configuration.advertisedHost = meshAdvertise
        if let cert = meshTlsCert, let key = meshTlsKey {
            configuration.tls = MeshTLS(certificatePath: cert, keyPath: key, caPath: meshCa)
        }
        do {
            return try MeshRuntime(
                configuration: configuration,
                group: group,
                logger: logger,
                metrics: metrics
            )
        } catch {
            throw ValidationError(
                "mesh TLS: cannot use \(meshTlsCert ?? "") / \(meshTlsKey ?? "") / \(meshCa ?? "-"): \(error)"
            )
        }
    }

    /// The node key from `--mesh-key-file` (64 hex digits), created there on first use.
    private func loadIdentity() throws -> NodeIdentity {
        guard let path = meshKeyFile else { return NodeIdentity() }
        if let text = try? String(contentsOfFile: path, encoding: .utf8) {
            let hex = Array(text.trimmingCharacters(in: .whitespacesAndNewlines).utf8)
            guard hex.count == 64, let bytes = Self.bytes(hex: hex), let identity = try? NodeIdentity(seed: bytes)
            else {
                throw ValidationError("--mesh-key-file \(path) does not hold a 64-hex-digit Ed25519 key")
            }
            return identity
        }
        let identity = NodeIdentity()
        let hex = identity.privateKey.rawRepresentation.map { String(format: "%02x", $0) }.joined()
        guard
            FileManager.default.createFile(
                atPath: path,
                contents: Data((hex + "\n").utf8),
                attributes: [.posixPermissions: 0o600]
            )
        else {
            throw ValidationError("cannot create --mesh-key-file \(path)")
        }
        return identity
    }

    private static func bytes(hex: [UInt8]) -> [UInt8]? {
        func nibble(_ c: UInt8) -> UInt8? {
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): return c - UInt8(ascii: "A") + 10
            default: return nil
            }
        }
        var out: [UInt8] = []
        var index = 0
        while index + 1 < hex.count {
            guard let high = nibble(hex[index]), let low = nibble(hex[index + 1]) else { return nil }
            out.append(high << 4 | low)
            index += 2
        }
        return out
    }
}
