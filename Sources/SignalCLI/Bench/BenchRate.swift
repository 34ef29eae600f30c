import ArgumentParser

/// `--rate R|max`: messages per second, or a closed loop as fast as the server answers.
enum BenchRate: ExpressibleByArgument, Sendable, CustomStringConvertible {
    case max
    case perSecond(Double)

    init?(argument: String) {
        if argument.lowercased() == "max" {
            self = .max
        } else if let value = Double(argument), value > 0 {
            self = .perSecond(value)
        } else {
            return nil
        }
    }

    var perSecond: Double? {
        if case .perSecond(let value) = self { return value }
        return nil
    }

    var description: String {
        switch self {
        case .max: return "max"
        case .perSecond(let value): return value == value.rounded() ? String(Int(value)) : String(value)
        }
    }

    var defaultValueDescription: String { description }
}
