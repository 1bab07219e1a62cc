// Package bridge is bib's media plane and policy.
//
// It owns, per call, two anchored legs (RTP and RTCP sockets facing each
// party), symmetric-RTP latching with strict source filtering, the
// byte-identical passthrough relay between the legs, and the tap seam where
// recorders, supervisor mixers and recording forks attach. It also holds the
// version gate (who may be monitored and recorded) as plain data and
// functions.
//
// It does not know SIP: package sip turns confirmed dialogs into MediaDesc
// values and drives Call through them. It does not write recordings: package
// recorder implements Tap and cmd/ wires it in.
package bridge
