import Signaling
import Histogram
import ArgumentParser
print("x")
