/// Error codes of protocol v1, sent as `{"type":"error","code":…}`.
public enum ErrorCode: String, Sendable, CaseIterable {
    case badMessage = "bad-message"
    case unknownType = "unknown-type"
    case tooLarge = "too-large"
    case rateLimited = "rate-limited"
    case notInRoom = "not-in-room"
    case peerUnavailable = "peer-unavailable"
    case roomFull = "room-full"
    case tooManyRooms = "too-many-rooms"
    case unauthorized
    case forbidden
    case idTaken = "id-taken"
    case queueFull = "queue-full"
    /// Extension: the request could not be carried out now (a cluster node cannot reach Redis). Nothing
    /// was delivered unless a later resume says otherwise; the client may retry.
    case unavailable
    /// Extension: the token's tenant has the most sessions it may have on this server
    /// (`--max-sessions-per-tenant`); the session is refused (close 1008).
    case tenantFull = "tenant-full"
}

/// WebSocket close codes used by the hub (RFC 6455 §7.4 plus the protocol's 4xxx codes).
public enum CloseCode: UInt16, Sendable {
    case normal = 1000
    case goingAway = 1001
    case protocolError = 1002
    case unsupportedData = 1003
    case invalidPayload = 1007
    case policyViolation = 1008
    case messageTooBig = 1009
    case internalError = 1011
    case tryAgainLater = 1013
    case unauthorized = 4001
    case sessionNotResumable = 4002
    /// The app's backend ended the session (`DELETE /v1/peers/{peer}` of the server API): reason `kicked`.
    /// The session is gone; a resume is refused (4002).
    case kicked = 4003
    case idTaken = 4009

    /// Whether a server close with this code keeps the session for the resume grace period.
    ///
    /// Per the contract only drain (1001), internal errors (1011) and overload (1013) do.
    public var keepsSession: Bool {
        switch self {
        case .goingAway, .internalError, .tryAgainLater: return true
        default: return false
        }
    }
}

/// Validation of the identifiers the protocol carries: peer ids and room names.
public enum Identifier {
    /// Maximum length of a peer id or room name.
    public static let maxLength = 64

    /// 1–64 characters of `[A-Za-z0-9._~-]`.
    public static func isValid(_ value: String) -> Bool {
        let utf8 = value.utf8
        guard !utf8.isEmpty, utf8.count <= maxLength else { return false }
        for byte in utf8 where !isAllowed(byte) {
            return false
        }
        return true
    }

    @inline(__always)
    private static func isAllowed(_ byte: UInt8) -> Bool {
        // Plain comparisons: range patterns on UInt8 compiled to unspecialized generic calls here.
        let letter = byte | 0x20  // folds A-Z onto a-z
        return (letter >= 0x61 && letter <= 0x7A) || (byte >= 0x30 && byte <= 0x39)
            || byte == 0x2E || byte == 0x5F || byte == 0x7E || byte == 0x2D
    }
}
