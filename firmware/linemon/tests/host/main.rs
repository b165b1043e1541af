//! Host tests of the line monitor: simulated line waveforms through the
//! state machine, embedded-hal-mock pins, the frame format, and property
//! tests over random timings.

mod cadences;
mod calls;
mod frames;
mod pins;
mod props;
mod sim;
