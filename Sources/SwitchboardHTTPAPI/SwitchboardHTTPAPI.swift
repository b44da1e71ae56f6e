// The HTTP server API lives here (next step of issue 7).
import Hummingbird
