// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

/// @title SwarmCoordinator
/// @notice Records a training swarm's rounds, and each member's reward and winners per round.
/// The owner (the operator's account) registers each member's account with its libp2p PeerId and
/// advances the round; members submit from their own registered accounts, once per round each.
contract SwarmCoordinator {
    /// Upper bound on one winners submission, so a vote's gas cost stays small and predictable.
    uint256 public constant MAX_WINNERS = 32;

    struct Member {
        address account;
        string peerId;
        /// False before registration and after deregistration; only registered members submit.
        bool registered;
        int256 totalReward;
        /// How often other members named this member a winner.
        uint64 wins;
        uint64 rewardSubmissions;
        uint64 winnerSubmissions;
    }

    struct Submission {
        bool rewardSubmitted;
        int256 reward;
        bool winnersSubmitted;
        /// keccak256(abi.encode(winners)): enough to tell a resubmission of the same list from a
        /// different one, without the gas of storing the strings.
        bytes32 winnersHash;
    }

    address public immutable owner;
    address public roundManager;
    uint64 public currentRound;
    uint64 public memberCount;

    mapping(address account => Member) private members;
    /// A PeerId and an account derive from one key, so once bound they stay bound, even after
    /// deregistration: a re-registration must repeat the same pair.
    mapping(bytes32 peerIdHash => address account) private accountOfPeer;
    mapping(uint64 round => mapping(address account => Submission)) private submissions;

    event MemberRegistered(address indexed account, string peerId);
    event MemberDeregistered(address indexed account, string peerId);
    event RoundManagerChanged(address indexed previous, address indexed current);
    event RoundAdvanced(uint64 indexed round);
    event RewardSubmitted(uint64 indexed round, address indexed account, int256 reward, int256 totalReward);
    event WinnersSubmitted(uint64 indexed round, address indexed account, string[] winners);

    error NotOwner(address caller);
    error NotRoundManager(address caller);
    error ZeroAccount();
    error EmptyPeerId();
    error AlreadyRegistered(address account);
    error PeerIdBoundToOtherAccount(string peerId, address account);
    error AccountBoundToOtherPeerId(address account, string peerId);
    error NotRegistered(address account);
    error RoundMismatch(uint64 expected, uint64 current);
    error FutureRound(uint64 round, uint64 current);
    error RewardAlreadySubmitted(uint64 round, address account);
    error WinnersAlreadySubmitted(uint64 round, address account);
    error NoWinners();
    error TooManyWinners(uint256 count, uint256 max);
    error DuplicateWinner(string peerId);
    error UnknownWinner(string peerId);

    modifier onlyOwner() {
        if (msg.sender != owner) revert NotOwner(msg.sender);
        _;
    }

    modifier onlyRegistered() {
        if (!members[msg.sender].registered) revert NotRegistered(msg.sender);
        _;
    }

    modifier notFuture(uint64 round) {
        if (round > currentRound) revert FutureRound(round, currentRound);
        _;
    }

    /// @param initialOwner The owner: an argument rather than the sender, so the contract can be
    /// deployed through a CREATE2 factory (whose address would otherwise own it) at an address
    /// that depends only on the owner, the salt and this code.
    constructor(address initialOwner) {
        if (initialOwner == address(0)) revert ZeroAccount();
        owner = initialOwner;
    }

    /// @notice Lets `manager` advance rounds besides the owner; the zero address removes the role.
    function setRoundManager(address manager) external onlyOwner {
        emit RoundManagerChanged(roundManager, manager);
        roundManager = manager;
    }

    /// @notice Binds `account` to `peerId` and lets it submit. A deregistered member may be
    /// registered again with the same PeerId.
    function registerMember(address account, string calldata peerId) external onlyOwner {
        if (account == address(0)) revert ZeroAccount();
        if (bytes(peerId).length == 0) revert EmptyPeerId();
        Member storage member = members[account];
        if (member.registered) revert AlreadyRegistered(account);
        bytes32 peerHash = keccak256(bytes(peerId));
        address bound = accountOfPeer[peerHash];
        if (bound != address(0) && bound != account) revert PeerIdBoundToOtherAccount(peerId, bound);
        if (member.account != address(0) && keccak256(bytes(member.peerId)) != peerHash) {
            revert AccountBoundToOtherPeerId(account, member.peerId);
        }
        if (member.account == address(0)) {
            member.account = account;
            member.peerId = peerId;
            accountOfPeer[peerHash] = account;
        }
        member.registered = true;
        memberCount += 1;
        emit MemberRegistered(account, peerId);
    }

    /// @notice Stops `account` from submitting; its totals and past submissions stay on record.
    function deregisterMember(address account) external onlyOwner {
        Member storage member = members[account];
        if (!member.registered) revert NotRegistered(account);
        member.registered = false;
        memberCount -= 1;
        emit MemberDeregistered(account, member.peerId);
    }

    /// @notice Moves from round `fromRound` to the next. Naming the round being left makes a
    /// retried or concurrent call fail with RoundMismatch instead of skipping a round.
    function advanceRound(uint64 fromRound) external returns (uint64) {
        if (msg.sender != owner && msg.sender != roundManager) revert NotRoundManager(msg.sender);
        if (fromRound != currentRound) revert RoundMismatch(fromRound, currentRound);
        currentRound = fromRound + 1;
        emit RoundAdvanced(currentRound);
        return currentRound;
    }

    /// @notice Records the caller's reward for `round` (the current one or an earlier one), once.
    function submitReward(uint64 round, int256 reward) external onlyRegistered notFuture(round) {
        Submission storage submission = submissions[round][msg.sender];
        if (submission.rewardSubmitted) revert RewardAlreadySubmitted(round, msg.sender);
        submission.rewardSubmitted = true;
        submission.reward = reward;
        Member storage member = members[msg.sender];
        member.totalReward += reward;
        member.rewardSubmissions += 1;
        emit RewardSubmitted(round, msg.sender, reward, member.totalReward);
    }

    /// @notice Records the caller's winners for `round`, once: distinct PeerIds of members that
    /// were ever registered (a member removed since may still have won an earlier round).
    function submitWinners(uint64 round, string[] calldata winners) external onlyRegistered notFuture(round) {
        Submission storage submission = submissions[round][msg.sender];
        if (submission.winnersSubmitted) revert WinnersAlreadySubmitted(round, msg.sender);
        if (winners.length == 0) revert NoWinners();
        if (winners.length > MAX_WINNERS) revert TooManyWinners(winners.length, MAX_WINNERS);
        address[] memory accounts = new address[](winners.length);
        for (uint256 i = 0; i < winners.length; i++) {
            address account = accountOfPeer[keccak256(bytes(winners[i]))];
            if (account == address(0)) revert UnknownWinner(winners[i]);
            // Comparing accounts finds duplicates, as each PeerId has exactly one account.
            for (uint256 j = 0; j < i; j++) {
                if (accounts[j] == account) revert DuplicateWinner(winners[i]);
            }
            accounts[i] = account;
            members[account].wins += 1;
        }
        submission.winnersSubmitted = true;
        submission.winnersHash = keccak256(abi.encode(winners));
        members[msg.sender].winnerSubmissions += 1;
        emit WinnersSubmitted(round, msg.sender, winners);
    }

    /// @notice The member record of `account`; an unknown account gives an all-zero record.
    function memberByAccount(address account) external view returns (Member memory) {
        return members[account];
    }

    /// @notice The member record bound to `peerId`; an unknown PeerId gives an all-zero record.
    function memberByPeerId(string calldata peerId) external view returns (Member memory) {
        return members[accountOfPeer[keccak256(bytes(peerId))]];
    }

    /// @notice What `account` submitted for `round`, so a client can tell whether a submission
    /// whose receipt it lost has landed.
    function submissionOf(uint64 round, address account) external view returns (Submission memory) {
        return submissions[round][account];
    }
}
