import Foundation

/// The browser SDK and demo page, shipped as package resources (`Sources/Signaling/Web`).
enum WebAssets {
    /// URL path → (resource file, content type, extra headers).
    static let routes: [(path: String, file: String, type: String, headers: [(String, String)])] = [
        ("/", "index.html", "text/html; charset=utf-8", []),
        ("/index.html", "index.html", "text/html; charset=utf-8", []),
        ("/sdk/signal.js", "signal.js", "text/javascript; charset=utf-8", [("Access-Control-Allow-Origin", "*")]),
        ("/test/e2e.html", "e2e.html", "text/html; charset=utf-8", []),
    ]

    /// Loads the assets from `directory` (a development override, `--web-root`) or the package's bundle.
    static func load(from directory: String? = nil) -> [String: HTTPEndpoints.Asset] {
        var assets: [String: HTTPEndpoints.Asset] = [:]
        for route in routes {
            let url: URL?
            if let directory {
                url = URL(fileURLWithPath: directory).appendingPathComponent(route.file)
            } else {
                url = Bundle.module.url(forResource: route.file, withExtension: nil, subdirectory: "Web")
            }
            guard let url, let data = try? Data(contentsOf: url) else { continue }
            assets[route.path] = HTTPEndpoints.Asset(
                contentType: route.type,
                body: Array(data),
                headers: route.headers + [("Cache-Control", "no-cache")]
            )
        }
        return assets
    }
}
