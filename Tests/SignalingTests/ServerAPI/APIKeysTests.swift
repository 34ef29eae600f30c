import Testing

@testable import Signaling

@Suite struct APIKeysTests {
    @Test func readsKeysTenantsCommentsAndBlankLines() throws {
        let keys = try APIKeys(
            file: """
                # the app's backend
                0123456789abcdef-old

                0123456789abcdef-new\t
                acme-key-0123456789 acme\r
                """
        )
        #expect(keys.keys.map(\.line) == [2, 4, 5])
        #expect(keys.keys.map(\.tenant) == [.default, .default, Tenant("acme")!])
        #expect(keys.match("0123456789abcdef-old")?.line == 2, "an old key still works during a rotation")
        #expect(keys.match("0123456789abcdef-new")?.line == 4)
        #expect(keys.match("acme-key-0123456789")?.tenant == Tenant("acme"))
        #expect(keys.match("0123456789abcdef-ol") == nil)
        #expect(keys.match("") == nil)
    }

    @Test(arguments: [
        ("", "no key in the file"),
        ("# only a comment\n", "no key in the file"),
        ("short", "line 1: a key is at least 16 printable ASCII characters"),
        ("0123456789abcdef acme extra", "line 1: expected KEY or KEY TENANT"),
        ("\n0123456789abcdef bad/tenant", "line 2: a tenant is 1-64 characters of [A-Za-z0-9._~-]"),
        ("0123456789abcdé00000", "line 1: a key is at least 16 printable ASCII characters"),
    ])
    func refusesBadFiles(contents: String, message: String) {
        #expect(throws: APIKeys.Invalid(description: message)) { try APIKeys(file: contents) }
    }

    @Test func authorizesBearerHeadersOnly() throws {
        let keys = try APIKeys(file: "0123456789abcdef")
        #expect(keys.authorize("Bearer 0123456789abcdef") != nil)
        #expect(keys.authorize("bearer  0123456789abcdef ") != nil, "the scheme is case-insensitive")
        #expect(keys.authorize("Basic 0123456789abcdef") == nil)
        #expect(keys.authorize("0123456789abcdef") == nil)
        #expect(keys.authorize("Bearer 0123456789abcdeg") == nil)
        #expect(keys.authorize(nil) == nil)
    }

    @Test func comparesDigestsWithoutAnEarlyExit() {
        #expect(APIKeys.constantTimeEqual([1, 2, 3], [1, 2, 3]))
        #expect(!APIKeys.constantTimeEqual([1, 2, 3], [1, 2, 4]))
        #expect(!APIKeys.constantTimeEqual([0, 2, 3], [1, 2, 3]))
        #expect(!APIKeys.constantTimeEqual([1, 2], [1, 2, 3]))
    }
}
