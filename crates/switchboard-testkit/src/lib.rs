//! Plugin conformance suite, fake vendor servers and fixture loading
