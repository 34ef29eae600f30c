import Crypto

/// The three frames that open a link (see ``LinkAuthenticator``), and the state machine each side runs:
/// no mesh message is read or sent on a link before it completes.
public enum LinkFrame: Hashable, Sendable {
    case hello(key: [UInt8], nonce: [UInt8])
    case challenge(key: [UInt8], nonce: [UInt8], proof: LinkAuthenticator.Proof)
    case proof(LinkAuthenticator.Proof)

    /// The longest handshake frame: a challenge, type(1) ‖ key(32) ‖ nonce(32) ‖ mac(32) ‖ signature(64)
    /// = 161 bytes (a hello is 65, a proof 97). Until a link has authenticated, the transport reads no
    /// frame longer than this.
    public static let maxEncodedSize = 1 + 32 + LinkAuthenticator.nonceSize + 32 + 64

    public func encoded() -> [UInt8] {
        var writer = ByteWriter()
        switch self {
        case .hello(let key, let nonce):
            writer.write(UInt8(0x10))
            writer.write(raw: key)
            writer.write(raw: nonce)
        case .challenge(let key, let nonce, let proof):
            writer.write(UInt8(0x11))
            writer.write(raw: key)
            writer.write(raw: nonce)
            writer.write(raw: proof.mac)
            writer.write(raw: proof.signature)
        case .proof(let proof):
            writer.write(UInt8(0x12))
            writer.write(raw: proof.mac)
            writer.write(raw: proof.signature)
        }
        return writer.bytes
    }

    public init(decoding bytes: [UInt8]) throws(MeshDecodingError) {
        var reader = ByteReader(bytes)
        switch try reader.readByte() {
        case 0x10:
            self = .hello(key: try reader.read(count: 32), nonce: try reader.read(count: LinkAuthenticator.nonceSize))
        case 0x11:
            let key = try reader.read(count: 32)
            let nonce = try reader.read(count: LinkAuthenticator.nonceSize)
            self = .challenge(
                key: key,
                nonce: nonce,
                proof: .init(mac: try reader.read(count: 32), signature: try reader.read(count: 64))
            )
        case 0x12:
            self = .proof(.init(mac: try reader.read(count: 32), signature: try reader.read(count: 64)))
        default:
            throw MeshDecodingError("not a link handshake frame")
        }
        guard reader.isAtEnd else { throw MeshDecodingError("trailing bytes after a handshake frame") }
    }
}

/// One side of a link's opening handshake. Feed it the frames that arrive; it answers with frames to
/// send and, at the end, the authenticated id of the node at the other end.
public struct LinkHandshake: Sendable {
    public enum Step: Hashable, Sendable {
        /// Send this frame and wait for the next one.
        case send([UInt8])
        /// The link is authenticated: the other node is `peer`. Send `frame` first when there is one.
        case established(peer: MeshKey, frame: [UInt8]?)
        /// Close the link.
        case failed(String)
    }

    enum State {
        case initiatorWaiting(nonce: [UInt8])
        case responderWaitingHello
        case responderWaitingProof(LinkAuthenticator.Transcript)
        case done
    }

    let authenticator: LinkAuthenticator
    var state: State

    /// The side that opened the TCP connection; send the returned hello first.
    public static func initiator(_ authenticator: LinkAuthenticator) -> (LinkHandshake, hello: [UInt8]) {
        let nonce = Self.nonce()
        let key = Array(authenticator.identity.publicKey.rawRepresentation)
        return (
            LinkHandshake(authenticator: authenticator, state: .initiatorWaiting(nonce: nonce)),
            LinkFrame.hello(key: key, nonce: nonce).encoded()
        )
    }

    /// The side that accepted the TCP connection.
    public static func responder(_ authenticator: LinkAuthenticator) -> LinkHandshake {
        LinkHandshake(authenticator: authenticator, state: .responderWaitingHello)
    }

    public mutating func receive(_ bytes: [UInt8]) -> Step {
        guard let frame = try? LinkFrame(decoding: bytes) else {
            state = .done
            return .failed("not a handshake frame")
        }
        let myKey = Array(authenticator.identity.publicKey.rawRepresentation)
        switch (state, frame) {
        case (.initiatorWaiting(let myNonce), .challenge(let key, let nonce, let proof)):
            state = .done
            let transcript = LinkAuthenticator.Transcript(
                initiatorKey: myKey,
                responderKey: key,
                initiatorNonce: myNonce,
                responderNonce: nonce
            )
            guard let peer = authenticator.verify(proof, from: .responder, transcript: transcript) else {
                return .failed("the other node does not know the mesh secret or its key")
            }
            guard peer != authenticator.identity.id else { return .failed("a link to itself") }
            return .established(
                peer: peer,
                frame: LinkFrame.proof(authenticator.prove(as: .initiator, transcript: transcript)).encoded()
            )
        case (.responderWaitingHello, .hello(let key, let nonce)):
            let myNonce = Self.nonce()
            let transcript = LinkAuthenticator.Transcript(
                initiatorKey: key,
                responderKey: myKey,
                initiatorNonce: nonce,
                responderNonce: myNonce
            )
            state = .responderWaitingProof(transcript)
            let proof = authenticator.prove(as: .responder, transcript: transcript)
            return .send(LinkFrame.challenge(key: myKey, nonce: myNonce, proof: proof).encoded())
        case (.responderWaitingProof(let transcript), .proof(let proof)):
            state = .done
            guard let peer = authenticator.verify(proof, from: .initiator, transcript: transcript) else {
                return .failed("the other node does not know the mesh secret or its key")
            }
            guard peer != authenticator.identity.id else { return .failed("a link to itself") }
            return .established(peer: peer, frame: nil)
        default:
            state = .done
            return .failed("unexpected handshake frame")
        }
    }

    static func nonce() -> [UInt8] {
        var generator = SystemRandomNumberGenerator()
        return (0..<LinkAuthenticator.nonceSize).map { _ in UInt8.random(in: 0...255, using: &generator) }
    }
}
