import CCrypto

/// One worker core's crypto context: that core's intel-ipsec-mb manager
/// (`IMB_MGR`, not thread-safe), allocated once when the worker starts.
///
/// Create one per worker core and pass it (borrowed) to every seal/open the
/// core makes. It is `~Copyable`, so exactly one owner exists; `Sendable` only
/// so it can be created on the control thread and moved to its worker. Never
/// use one context from two threads. Store it in a `let` (a `var` stored
/// property of a class costs a dynamic exclusivity check per access).
///
/// When intel-ipsec-mb is unusable on this machine the context has no manager
/// and only libsodium keys can be used with it (no ipsec-mb key can exist
/// then: `AEADKey` refuses to install one).
public struct CryptoCore: ~Copyable, @unchecked Sendable {
    /// `IMB_MGR *`, or nil when intel-ipsec-mb is unusable here.
    @usableFromInline let manager: UnsafeMutablePointer<IMB_MGR>?

    public init() throws(CryptoError) {
        if CryptoEngines.probe.mb_usable != 0 {
            var status = SLC_OK
            guard let mgr = slc_mb_mgr_create(&status) else {
                throw status == SLC_ERR_NO_MEMORY
                    ? .outOfMemory
                    : .engineUnavailable(.ipsecMB, reason: CryptoEngines.ipsecMBUnavailableReason)
            }
            manager = mgr
        } else {
            manager = nil
        }
    }

    deinit {
        slc_mb_mgr_destroy(manager)
    }

    /// The architecture this context's intel-ipsec-mb manager runs (nil without one).
    public var ipsecMBArchitecture: IPsecMBArchitecture? {
        manager.flatMap { IPsecMBArchitecture(slc_mb_mgr_arch($0)) }
    }
}
